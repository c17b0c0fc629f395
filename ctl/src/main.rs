//! `push-jobs-server-ctl`: the operator's tool beside Chef Server. The library does the work;
//! `cli::main` parses the command line (omnibus-ctl's rules, ops.md §2.1) and dispatches.

fn main() -> std::process::ExitCode {
    pushy_ctl::cli::main()
}
