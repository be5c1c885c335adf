//! AFL++ entry point for the `task_token` target (see `tollgate_fuzz::task_token`).
//! Outside AFL it runs one input read from stdin: `task_token < crash-file`.

fn main() {
    afl::fuzz!(|data: &[u8]| tollgate_fuzz::task_token::run(data));
}
