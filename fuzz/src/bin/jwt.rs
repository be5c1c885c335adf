//! AFL++ entry point for the `jwt` target (see `tollgate_fuzz::jwt`).
//! Outside AFL it runs one input read from stdin: `jwt < crash-file`.

fn main() {
    afl::fuzz!(|data: &[u8]| tollgate_fuzz::jwt::run(data));
}
