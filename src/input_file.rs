//! Reading a file the user names (`--config`, `--password-file`, the TLS files), bounded in
//! size and time whatever it turns out to be:
//! - a FIFO is opened without waiting for a writer, then waited for as a pipe is;
//! - a device that never ends (`/dev/zero`) is read up to [`MAX_BYTES`], then refused;
//! - a pipe or device that keeps the reader waiting (a process substitution that hangs) is
//!   given up after [`WAIT`].
//!
//! A regular file is read at once. What a hung mount does to it is out of reach here: the TLS
//! files, which are read again while leading, are read off the supervisor's thread
//! (`tls::client_config_off_thread`).

use std::fs::{File, OpenOptions};
use std::io::{Error, ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest file read: far above any certificate bundle, configuration or password.
const MAX_BYTES: usize = 4 << 20;
/// How long a pipe or device may keep the reader waiting, in all.
const WAIT: Duration = Duration::from_secs(10);

/// The whole content of `path`, or why not: a refusal names the limit it met.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    read_within(path, WAIT)
}

/// `path` opened for reading without waiting: a FIFO's open would wait for a writer.
pub fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

/// [`read`]; a pipe, FIFO or device only once per path in this process, later calls getting
/// what the first read gave. The configuration file is read for the log format before the
/// flags are parsed, then for the rest, and a pipe (`--config <(...)`) gives its content to
/// one read only. A regular file is read each time.
pub fn read_once(path: &Path) -> std::io::Result<Vec<u8>> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return read(path);
    }
    type Reads = Vec<(std::path::PathBuf, Result<Vec<u8>, (ErrorKind, String)>)>;
    static READS: std::sync::Mutex<Reads> = std::sync::Mutex::new(Vec::new());
    let mut reads = READS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let done = match reads.iter().find(|(p, _)| p == path) {
        Some((_, done)) => done.clone(),
        None => {
            let done = read(path).map_err(|e| (e.kind(), e.to_string()));
            reads.push((path.to_path_buf(), done.clone()));
            done
        }
    };
    done.map_err(|(kind, message)| Error::new(kind, message))
}

fn read_within(path: &Path, wait: Duration) -> std::io::Result<Vec<u8>> {
    let mut file = open(path)?;
    let kind = file.metadata()?.file_type();
    let mut bytes = Vec::new();
    if kind.is_file() {
        (&mut file)
            .take(MAX_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
    } else if kind.is_fifo() || kind.is_char_device() || kind.is_socket() {
        read_waiting(&mut file, &mut bytes, wait)?;
    } else {
        return Err(Error::new(ErrorKind::InvalidInput, "not a file"));
    }
    if bytes.len() > MAX_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_BYTES >> 20),
        ));
    }
    Ok(bytes)
}

/// Read a non-blocking pipe or device to its end, waiting for data (or for a FIFO's first
/// writer: until one comes, a read would say end of file) for up to `wait` in all; stops past
/// MAX_BYTES (the caller refuses it).
fn read_waiting(file: &mut File, bytes: &mut Vec<u8>, wait: Duration) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let until = Instant::now() + wait;
    let mut buf = [0u8; 64 * 1024];
    while bytes.len() <= MAX_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let waited = humantime::format_duration(wait);
            let why = format!("nothing more to read within {waited}");
            return Err(Error::new(ErrorKind::TimedOut, why));
        }
        // Rounded up: a timeout of 0 would return at once and spin.
        let ms = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            // Nothing yet (a read now would take a FIFO without a writer for its end).
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lr-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let path = temp("plain");
        std::fs::write(&path, "password\n").unwrap();
        assert_eq!(read(&path).unwrap(), b"password\n");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_fifo_that_no_writer_opens_is_given_up_after_the_wait() {
        let path = temp("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let started = Instant::now();
        let e = read_within(&path, Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        std::fs::remove_file(&path).unwrap();
    }

    /// A pipe's read end as a path, as a process substitution (`<(cmd)`) gives one.
    fn pipe_path() -> (std::io::PipeReader, std::io::PipeWriter, std::path::PathBuf) {
        use std::os::fd::AsRawFd;
        let (r, w) = std::io::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", r.as_raw_fd()).into();
        (r, w, path)
    }

    #[test]
    fn a_pipe_is_read_to_its_end_as_its_writer_writes() {
        let (_r, mut w, path) = pipe_path();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w.write_all(b"late ").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            w.write_all(b"words").unwrap();
        });
        assert_eq!(read(&path).unwrap(), b"late words");
        writer.join().unwrap();
    }

    #[test]
    fn a_pipe_whose_writer_is_gone_gives_what_it_left_to_every_read_once() {
        let (_r, mut w, path) = pipe_path();
        w.write_all(b"ttl = 3\n").unwrap();
        drop(w);
        assert_eq!(read_once(&path).unwrap(), b"ttl = 3\n");
        assert_eq!(read_once(&path).unwrap(), b"ttl = 3\n");
    }

    #[test]
    fn a_pipe_that_keeps_the_reader_waiting_is_given_up() {
        let (_r, _w, path) = pipe_path();
        let started = Instant::now();
        let e = read_within(&path, Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "nothing more to read within 300ms");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_endless_device_is_refused_past_the_limit() {
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "larger than 4 MiB");
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let e = read(Path::new("/")).unwrap_err();
        assert!(
            e.kind() == ErrorKind::InvalidInput || e.kind() == ErrorKind::IsADirectory,
            "{e}"
        );
    }
}
