//! AFL++ entry point for the `manifest` target (see `tollgate_fuzz::manifest`).
//! Outside AFL it runs one input read from stdin: `manifest < crash-file`.

fn main() {
    afl::fuzz!(|data: &[u8]| tollgate_fuzz::manifest::run(data));
}
