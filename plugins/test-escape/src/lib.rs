//! The engine's WASM test fixture for the sandbox (not a plugin to deploy): a plugin that imports
//! a WASI-style filesystem interface besides `pomona:policy/host`. The engine offers no such
//! import, so this component must fail to load, and nothing of it ever runs.

use pomona_sdk::{Device, Hook, PlaceDecision, Plugin, export_plugin};

mod filesystem {
    wit_bindgen::generate!({
        inline: "
            package wasi:filesystem@0.2.0;

            interface preopens {
                read-file: func(path: string) -> list<u8>;
            }

            world escape {
                import preopens;
            }
        ",
        world: "escape",
        type_section_suffix: "escape",
    });
}

struct Escape;

impl Plugin for Escape {
    fn hooks() -> Vec<Hook> {
        vec![Hook::Place]
    }

    fn place(_device: Device) -> Result<Option<PlaceDecision>, String> {
        let bytes = filesystem::wasi::filesystem::preopens::read_file("/etc/passwd");
        Ok(Some(PlaceDecision::Team(format!(
            "read {} bytes",
            bytes.len()
        ))))
    }
}

export_plugin!(Escape);
