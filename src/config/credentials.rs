//! systemd's credentials (`LoadCredential=etcd-password:/etc/leaderrun/etcd-password`): under a
//! unit that loads one, `$CREDENTIALS_DIRECTORY/etcd-password` is the password file when a user
//! is set and nothing else gives a password (a flag, a `LEADERRUN_*` or etcdctl variable, the
//! configuration file): the lowest layer but the defaults. systemd copies the file into a
//! directory only the service's user can read, gone when the unit stops; no `%d` specifier
//! (systemd 250) is needed, only `$CREDENTIALS_DIRECTORY` (247).

use crate::config::{Env, Opt, Settings, Source, Sourced, PASSWORD, PASSWORD_FILE, USER};
use crate::error::Error;
use std::path::Path;

/// The variable systemd sets to the unit's credentials directory.
pub const DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";

/// The credential that holds etcd's password.
pub const PASSWORD_CREDENTIAL: &str = "etcd-password";

/// The layer: the password file from the credentials directory, for the `wanted` settings when
/// the user is set by a higher layer and no password is (`wanted` lists what none sets).
pub fn settings(env: &Env, wanted: &[&'static Opt]) -> Result<Settings, Error> {
    let needed =
        wanted.contains(&&PASSWORD_FILE) && wanted.contains(&&PASSWORD) && !wanted.contains(&&USER);
    let file = env
        .var(DIRECTORY_VAR)
        .filter(|_| needed)
        .map(|dir| Path::new(dir).join(PASSWORD_CREDENTIAL))
        .filter(|path| path.exists());
    Ok(Settings {
        password_file: file.map(|value| Sourced {
            value,
            from: Source::Credential(&PASSWORD_FILE),
        }),
        ..Settings::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{flags, Config};

    fn load(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, Error> {
        let flags = flags::parse(std::iter::once("leaderrun").chain(args.iter().copied()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        let env = Env::from_pairs(vars.iter().map(|(k, v)| (k.into(), v.into())));
        Config::load(flags, &env)
    }

    #[test]
    fn the_password_credential_is_the_password_file_when_nothing_else_gives_one() {
        let dir = std::env::temp_dir().join(format!("credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(PASSWORD_CREDENTIAL);
        std::fs::write(&file, "from-credential\n").unwrap();
        let d = dir.display().to_string();
        let password = |args: &[&str], vars: &[(&str, &str)]| {
            load(args, vars).map(|c| c.connection.user.map(|u| u.password))
        };
        let cred = (DIRECTORY_VAR, d.as_str());
        let user = ("LEADERRUN_USER", "web");
        assert_eq!(
            password(&["--", "true"], &[user, cred]).unwrap().as_deref(),
            Some("from-credential")
        );
        // Any other password wins; without a user, the credential is not looked at.
        let env_pw = ("LEADERRUN_PASSWORD", "from-env");
        assert_eq!(
            password(&["--", "true"], &[user, cred, env_pw])
                .unwrap()
                .as_deref(),
            Some("from-env")
        );
        let flag = ["--user", "web:from-flag", "--", "true"];
        assert_eq!(
            password(&flag, &[cred]).unwrap().as_deref(),
            Some("from-flag")
        );
        let etcdctl = [
            ("ETCDCTL_USER", "web"),
            ("ETCDCTL_PASSWORD", "from-etcdctl"),
            cred,
        ];
        assert_eq!(
            password(&["--", "true"], &etcdctl).unwrap().as_deref(),
            Some("from-etcdctl")
        );
        assert_eq!(password(&["--", "true"], &[cred]).unwrap(), None);
        // No such credential, or an empty variable: as before, a user needs a password.
        let empty = (DIRECTORY_VAR, "");
        for vars in [[user, empty], [user, (DIRECTORY_VAR, "/nonexistent")]] {
            let e = load(&["--", "true"], &vars).unwrap_err().to_string();
            assert!(e.contains("without a password"), "{e}");
        }
        // A credential that cannot be read is named.
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        let e = load(&["--", "true"], &[user, cred])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("etcd-password") && e.contains(DIRECTORY_VAR),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
