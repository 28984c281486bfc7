pub mod store;
pub mod wire;
