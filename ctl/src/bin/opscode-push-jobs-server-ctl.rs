//! `opscode-push-jobs-server-ctl`: the original's name for `push-jobs-server-ctl` (ops.md §0),
//! kept so existing scripts and docs work. The same program: see `src/main.rs`.

fn main() -> std::process::ExitCode {
    pushy_ctl::cli::main()
}
