//! etcdctl's variables (`ETCDCTL_ENDPOINTS`, `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`,
//! `ETCDCTL_USER`, `ETCDCTL_PASSWORD`): a layer below the configuration file, so a shell set up
//! for etcdctl reaches the same cluster with leaderrun. Each is read only when no flag,
//! `LEADERRUN_*` variable or configuration key sets its setting, as etcdctl reads it: the
//! endpoints comma-separated, the user as `NAME` or `NAME:PASSWORD`. `ETCDCTL_PASSWORD` goes
//! with `ETCDCTL_USER` only: it is another user's password when the user comes from elsewhere.

use crate::config::{
    Env, Opt, Parser, Reader, Settings, Source, Sourced, CACERT, CERT, ENDPOINTS, KEY, PASSWORD,
    USER,
};
use crate::error::Error;

/// Each setting etcdctl has a variable for, with that variable.
pub const VARS: &[(&Opt, &str)] = &[
    (&ENDPOINTS, "ETCDCTL_ENDPOINTS"),
    (&CACERT, "ETCDCTL_CACERT"),
    (&CERT, "ETCDCTL_CERT"),
    (&KEY, "ETCDCTL_KEY"),
    (&USER, "ETCDCTL_USER"),
    (&PASSWORD, "ETCDCTL_PASSWORD"),
];

/// etcdctl's variable for `opt`, if it has one.
pub fn var(opt: &Opt) -> Option<&'static str> {
    VARS.iter().find(|(o, _)| *o == opt).map(|(_, v)| *v)
}

/// The layer: etcdctl's variables in the environment.
pub struct Etcdctl<'a>(pub &'a Env);

impl Etcdctl<'_> {
    /// The `wanted` settings that etcdctl's variables give (the password only with the user).
    pub fn settings(&self, wanted: &[&'static Opt]) -> Result<Settings, Error> {
        let wanted: Vec<&'static Opt> = wanted
            .iter()
            .copied()
            .filter(|o| **o != PASSWORD || wanted.contains(&&USER))
            .collect();
        Settings::read(self, &wanted)
    }
}

impl Reader for Etcdctl<'_> {
    fn read<T>(&self, opt: &'static Opt, parse: Parser<T>) -> Result<Option<Sourced<T>>, Error> {
        let Some(name) = var(opt) else {
            return Ok(None);
        };
        let Some(raw) = self.0.var(name) else {
            return Ok(None);
        };
        let secret = *opt == PASSWORD || *opt == USER;
        let shown = match secret {
            true => "(not shown)".to_string(),
            false => crate::log::shown_value(&raw.to_string_lossy()),
        };
        let text = raw
            .to_str()
            .ok_or_else(|| Error::Usage(format!("{name}={shown}: not valid UTF-8")))?;
        let value = parse(text).map_err(|e| Error::Usage(format!("{name}={shown}: {e}")))?;
        Ok(Some(Sourced {
            value,
            from: Source::Etcdctl(opt),
        }))
    }
}

/// The line that says which of etcdctl's variables were used, if any.
pub fn note(settings: &Settings) -> Option<String> {
    let used: Vec<&str> = settings
        .sources()
        .into_iter()
        .filter_map(|s| match s {
            Source::Etcdctl(opt) => var(opt),
            _ => None,
        })
        .collect();
    (!used.is_empty()).then(|| {
        format!(
            "connecting with etcdctl's {} (no flag, LEADERRUN_ variable or configuration key sets {})",
            used.join(", "),
            match used.len() {
                1 => "it",
                _ => "them",
            }
        )
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
    fn etcdctls_variables_are_read_below_every_other_layer() {
        let c = load(
            &["--", "true"],
            &[("ETCDCTL_ENDPOINTS", "e1:1,http://e2:2")],
        )
        .unwrap();
        assert_eq!(c.connection.endpoints, ["http://e1:1", "http://e2:2"]);
        assert_eq!(
            c.notes,
            [
                "connecting with etcdctl's ETCDCTL_ENDPOINTS (no flag, LEADERRUN_ variable or \
              configuration key sets it)"
            ]
        );
        // A flag, a LEADERRUN_ variable or the file wins, and the note says nothing then.
        let vars = [
            ("ETCDCTL_ENDPOINTS", "e1:1"),
            ("LEADERRUN_ENDPOINTS", "l:1"),
        ];
        let c = load(&["--", "true"], &vars).unwrap();
        assert_eq!(
            (c.connection.endpoints.as_slice(), c.notes.len()),
            (&["http://l:1".to_string()][..], 0)
        );
        let c = load(&["--endpoints", "f:1", "--", "true"], &vars[..1]).unwrap();
        assert_eq!(c.connection.endpoints, ["http://f:1"]);
        let file = std::env::temp_dir().join(format!("etcdctl-layer-{}.toml", std::process::id()));
        std::fs::write(&file, "endpoints = \"k:1\"\n").unwrap();
        let config = file.display().to_string();
        let c = load(&["--config", &config, "--", "true"], &vars[..1]).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(c.connection.endpoints, ["http://k:1"]);
        // Empty is unset, as for leaderrun's own variables: the default.
        let c = load(&["--", "true"], &[("ETCDCTL_ENDPOINTS", "")]).unwrap();
        assert_eq!(c.connection.endpoints, ["http://127.0.0.1:2379"]);
        assert!(c.notes.is_empty());
    }

    #[test]
    fn a_bad_etcdctl_value_names_its_variable_and_hides_secrets() {
        let e = load(&["--", "true"], &[("ETCDCTL_ENDPOINTS", "a:99999")]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("ETCDCTL_ENDPOINTS=a:99999: "),
            "{e}"
        );
        let e = load(&["--", "true"], &[("ETCDCTL_ENDPOINTS", " ")]).unwrap_err();
        assert!(e.to_string().contains("ETCDCTL_ENDPOINTS"), "{e}");
        let e = load(
            &["--", "true"],
            &[("ETCDCTL_CACERT", "/nonexistent/ca.pem")],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ETCDCTL_CACERT=/nonexistent/ca.pem: "),
            "{e}"
        );
        // A user and its password, as etcdctl takes them: NAME:PASSWORD, or NAME with
        // ETCDCTL_PASSWORD; both at once is two passwords.
        let c = load(&["--", "true"], &[("ETCDCTL_USER", "web:s3cret")]).unwrap();
        let user = c.connection.user.unwrap();
        assert_eq!(
            (user.name.as_str(), user.password.as_str()),
            ("web", "s3cret")
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let vars = [("ETCDCTL_USER", "web"), ("ETCDCTL_PASSWORD", "s3cret")];
        let c = load(&["--", "true"], &vars).unwrap();
        assert_eq!(c.connection.user.unwrap().password, "s3cret");
        assert!(
            c.notes[0].contains("ETCDCTL_USER, ETCDCTL_PASSWORD"),
            "{:?}",
            c.notes
        );
        let vars = [("ETCDCTL_USER", "web:a"), ("ETCDCTL_PASSWORD", "b")];
        let e = load(&["--", "true"], &vars).unwrap_err().to_string();
        assert!(
            e.contains("ETCDCTL_USER and ETCDCTL_PASSWORD both give a password"),
            "{e}"
        );
        assert!(!e.contains("web:a"), "{e}");
        // ETCDCTL_PASSWORD is the password of ETCDCTL_USER, not of another user.
        let vars = [("LEADERRUN_USER", "web"), ("ETCDCTL_PASSWORD", "root's")];
        let e = load(&["--", "true"], &vars).unwrap_err().to_string();
        assert!(e.contains("without a password"), "{e}");
        let e = load(&["--", "true"], &[("ETCDCTL_USER", "bad\nname:pw")]).unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
    }
}
