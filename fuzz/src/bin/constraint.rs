//! AFL++ entry point for the `constraint` target (see `tollgate_fuzz::constraint`).
//! Outside AFL it runs one input read from stdin: `constraint < crash-file`.

fn main() {
    afl::fuzz!(|data: &[u8]| tollgate_fuzz::constraint::run(data));
}
