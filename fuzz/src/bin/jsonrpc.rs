//! AFL++ entry point for the `jsonrpc` target (see `tollgate_fuzz::jsonrpc`).
//! Outside AFL it runs one input read from stdin: `jsonrpc < crash-file`.

fn main() {
    afl::fuzz!(|data: &[u8]| tollgate_fuzz::jsonrpc::run(data));
}
