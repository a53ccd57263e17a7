//! `general.file_type`: the names llama.cpp gives the values of `llama_ftype`.

/// llama.cpp's `general.file_type` names (`llama_ftype`).
pub fn file_type_name(ft: u64) -> &'static str {
    match ft {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        32 => "MOSTLY_BF16",
        _ => "other",
    }
}

/// The short name llama.cpp prints for a file type (`llama_model_ftype_name`): "all F32", "F16",
/// "Q8_0"...
pub fn file_type_short_name(ft: u64) -> &'static str {
    match file_type_name(ft) {
        "ALL_F32" => "all F32",
        name => name.strip_prefix("MOSTLY_").unwrap_or(name),
    }
}
