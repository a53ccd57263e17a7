#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qgpt_fuzz::targets::tokenizer(data));
