//! `loadgen`: see `loadgen --help` and the crate documentation.

use std::process::ExitCode;

use ferroloop_loadgen::{args, report, run, sys};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) if msg == args::USAGE => {
            println!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Some(cpu) = args.cpu {
        if let Err(e) = sys::pin_to_cpu(cpu) {
            eprintln!("loadgen: cannot pin to CPU {cpu}: {e}");
            return ExitCode::from(2);
        }
    }
    let out = match run::run(&args.config) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report::json(&args.config, &out));
    for m in &out.messages {
        eprintln!("loadgen: error: {m}");
    }
    if out.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
