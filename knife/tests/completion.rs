//! `push-jobs completion SHELL` as a person runs it: the real binary, no configuration
//! anywhere, and each script handed to its shell's own syntax check when that shell is
//! installed (skipped, with a note, when it is not).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_push-jobs");

/// The script `push-jobs completion shell` prints, run where no knife configuration can
/// be found (completion must not need one).
fn script(shell: &str) -> String {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["completion", shell])
        .current_dir(empty.path())
        .env("HOME", empty.path())
        .env_remove("KNIFE_HOME")
        .env_remove("CHEF_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The shell's path when it is installed.
fn installed(shell: &str) -> Option<String> {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| format!("{dir}/{shell}"))
        .find(|p| Path::new(p).exists())
}

/// Checks the script's syntax with `shell` (`check` is its parse-only flag).
fn parses(shell: &str, check: &str, text: &str) {
    let Some(path) = installed(shell) else {
        eprintln!("{shell} is not installed: its script's syntax is not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("push-jobs.{shell}"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(path).arg(check).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{shell} {check} rejects the script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bash_completion_names_the_subcommands_and_parses() {
    let text = script("bash");
    for word in [
        "push-jobs",
        "job",
        "node",
        "start",
        "abort",
        "completion",
        "yaml",
    ] {
        assert!(text.contains(word), "no {word:?} in the bash script");
    }
    parses("bash", "-n", &text);
}

#[test]
fn zsh_completion_names_the_subcommands_and_parses() {
    let text = script("zsh");
    assert!(text.starts_with("#compdef push-jobs"), "{text}");
    for word in ["job", "node", "start", "abort", "completion", "yaml"] {
        assert!(text.contains(word), "no {word:?} in the zsh script");
    }
    parses("zsh", "-n", &text);
}

#[test]
fn fish_completion_names_the_subcommands_and_parses() {
    let text = script("fish");
    for word in [
        "complete -c push-jobs",
        "job",
        "node",
        "start",
        "abort",
        "completion",
        "yaml",
    ] {
        assert!(text.contains(word), "no {word:?} in the fish script");
    }
    parses("fish", "--no-execute", &text);
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
