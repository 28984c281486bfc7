//! `componentize IN.wasm OUT.wasm`: wrap a core module that carries `wit-bindgen`'s component-type
//! section into a WebAssembly component, and check that it imports nothing but `pomona:policy`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: componentize IN.wasm OUT.wasm");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("componentize: {input}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &str, output: &str) -> Result<(), String> {
    let module = std::fs::read(input).map_err(|e| format!("reading: {e}"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .map_err(|e| format!("not a module built with pomona-sdk: {e:#}"))?
        .validate(true)
        .encode()
        .map_err(|e| format!("encoding the component: {e:#}"))?;
    std::fs::write(output, component).map_err(|e| format!("writing {output}: {e}"))
}
