//! fork and exec the way posix_spawn does them: `clone(CLONE_VM | CLONE_VFORK)`, so that the
//! start costs no copy of leaderrun's page tables and no copy-on-write faults afterwards (a
//! plain fork did, on the handover's path). The child still does what posix_spawn cannot: arm
//! the parent-death signal, and check that its parent did not die before that.
//!
//! The child shares leaderrun's memory until exec and runs on a stack of its own; the calling
//! thread waits meanwhile (CLONE_VFORK). Between clone and exec it makes only
//! async-signal-safe calls, and no handler of leaderrun's runs in it (all signals are blocked
//! across the clone, and the child resets every caught signal before unblocking).

use nix::libc::{self, c_char, c_int, c_void};
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

/// What exec needs, made before the clone: nothing allocates in the child.
pub struct Image {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    defaults: Vec<c_int>,
    /// The resource limits leaderrun raised for itself, as they were ([`crate::process::limits`]).
    limits: Vec<(nix::sys::resource::Resource, libc::rlimit)>,
    /// Where the command's stdout and stderr go instead of leaderrun's own ([`Image::output_to`]).
    output: Option<c_int>,
}

impl Image {
    /// `program` with `args` (argv[0] is the program as given), leaderrun's environment without
    /// `remove` and with `set` on top, and `defaults` back at their default disposition.
    pub fn new(
        program: &Path,
        args: &[OsString],
        set: &[(String, String)],
        remove: &[&str],
        defaults: &[c_int],
    ) -> io::Result<Image> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command")
            })
        };
        let program = c(program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for arg in args {
            argv.push(c(arg.as_bytes())?);
        }
        let kept = std::env::vars_os().filter(|(k, _)| {
            let k = k.as_bytes();
            !remove.iter().any(|r| r.as_bytes() == k) && !set.iter().any(|(s, _)| s.as_bytes() == k)
        });
        let mut env = Vec::new();
        for (k, v) in kept {
            env.push(c(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        for (k, v) in set {
            env.push(c(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        Ok(Image {
            program,
            argv,
            env,
            defaults: defaults.to_vec(),
            limits: crate::process::limits::for_child(),
            output: None,
        })
    }

    /// The command's stdout and stderr go to `fd` (a pipe that leaderrun drains), made its
    /// descriptors 1 and 2 between the clone and the exec: nothing else of leaderrun's is passed
    /// on. `fd` must stay open until [`spawn`] returns.
    pub fn output_to(mut self, fd: BorrowedFd<'_>) -> Image {
        self.output = Some(fd.as_raw_fd());
        self
    }
}

/// What the child reads (and writes back: exec's errno) in the memory it shares with us.
struct Shared<'a> {
    image: &'a Image,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    parent: libc::pid_t,
    errno: c_int,
    group: Option<&'a AtomicI64>,
}

/// The child's stack: generous for execvpe (a script without `#!` copies argv onto it).
fn stack_size(image: &Image) -> usize {
    let size = 64 * 1024 + (image.argv.len() + 4) * std::mem::size_of::<*const c_char>();
    size.next_multiple_of(4096)
}

/// Start `image` in a new process group with SIGKILL as its parent-death signal; returns its
/// pid once it runs the command (exec succeeded), or exec's error (the child then exited 127,
/// its status is the reaper's). Call it from a thread that lives as long as the process: the
/// parent-death signal fires when the calling *thread* exits.
///
/// `group`, if given, gets the new group's id from the child itself, before its exec: the
/// guardian's page, which must know the group before any of the command runs (leaderrun may be
/// SIGKILLed the moment after the exec, before this thread runs again).
pub fn spawn(image: &Image, group: Option<&AtomicI64>) -> io::Result<libc::pid_t> {
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<*const c_char>>()
    };
    let mut shared = Shared {
        image,
        argv: ptrs(&image.argv),
        envp: ptrs(&image.env),
        parent: std::process::id() as libc::pid_t,
        errno: 0,
        group,
    };
    let size = stack_size(image);
    // SAFETY: a fresh private mapping, unmapped below once the child no longer uses it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all signals blocked in this thread around the clone (restored right after), so
    // that none is handled in the child before it resets the handlers; the child runs on its
    // own stack and returns to nothing of ours (it execs or _exits); CLONE_VFORK keeps this
    // thread (and so `shared` and the stack) waiting until then.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.cast::<u8>().add(size).cast::<c_void>();
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut shared as *mut Shared).cast(),
        );
        let clone_errno = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::munmap(stack, size);
        if pid == -1 {
            return Err(clone_errno);
        }
        pid
    };
    // The group exists from this side too (as shells do): killpg works at once.
    // SAFETY: plain syscall; EACCES (it exec'd, it is its own leader already) changes nothing.
    unsafe { libc::setpgid(pid, pid) };
    // SAFETY: the child is done with `shared` (it exec'd or exited); it wrote through a pointer.
    match unsafe { std::ptr::read_volatile(&shared.errno) } {
        0 => Ok(pid),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The child, between clone and exec: async-signal-safe calls only, and no return.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Shared`, alive while the parent waits (CLONE_VFORK).
    unsafe {
        let shared = &mut *arg.cast::<Shared>();
        let fail = |shared: &mut Shared| -> c_int {
            shared.errno = *libc::__errno_location();
            if shared.errno == 0 {
                shared.errno = libc::ECHILD;
            }
            libc::_exit(127)
        };
        // leaderrun's handlers must not run here: every caught signal back at its default
        // (ignored ones stay ignored, as a shell keeps them), then nothing blocked.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // As std's spawn: SIGPIPE (ignored by the Rust runtime) at its default; and the
        // job-control signals leaderrun ignores.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for &sig in &shared.image.defaults {
            libc::signal(sig, libc::SIG_DFL);
        }
        if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return fail(shared);
        }
        // The output pipe as stdout and stderr. Through a copy at 3 or above: the pipe is
        // close-on-exec, and may itself be descriptor 1 or 2 (leaderrun started with them
        // closed); dup2 leaves the copies open across the exec.
        if let Some(fd) = shared.image.output {
            let copy = libc::fcntl(fd, libc::F_DUPFD, 3);
            if copy < 0 || libc::dup2(copy, 1) < 0 || libc::dup2(copy, 2) < 0 {
                return fail(shared);
            }
            libc::close(copy);
        }
        // The limits leaderrun was started with (lowering a soft limit cannot fail).
        for (resource, limit) in &shared.image.limits {
            libc::setrlimit(*resource as _, limit);
        }
        // The parent may have died before the death signal was armed.
        if libc::getppid() != shared.parent {
            libc::_exit(1);
        }
        // A lock-free store into memory we share: the group is known before the command runs.
        if let Some(group) = shared.group {
            group.store(i64::from(libc::getpid()), Ordering::SeqCst);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As std's spawn: execvp semantics (a script without `#!` runs under /bin/sh).
        libc::execvpe(
            shared.image.program.as_ptr(),
            shared.argv.as_ptr(),
            shared.envp.as_ptr(),
        );
        fail(shared)
    }
}
