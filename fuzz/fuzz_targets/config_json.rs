//! `Config::from_json` on arbitrary text: an error, or a config whose derived widths are
//! positive and consistent and which survives a round trip through `to_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_context_formats::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::from_json(&text, "fuzz/config.json") {
        Ok(c) => {
            assert!(c.ctx_window > 0 && c.d_model > 0 && c.n_layers > 0 && c.n_heads > 0);
            assert!(c.m_attn.is_finite() && c.m_attn > 0.0 && c.m_mlp.is_finite() && c.m_mlp > 0.0);
            assert!(c.d_ff() > 0 && c.d_attn_qk() > 0, "{c:?}");
            assert_eq!(c.d_attn_qk() % c.n_heads, 0, "{c:?}");
            assert_eq!(c.d_head_qk() * c.n_heads, c.d_attn_qk(), "{c:?}");
            let again = Config::from_json(&c.to_json().to_string(), "round trip")
                .unwrap_or_else(|e| panic!("{c:?} does not round-trip: {}", e.message));
            assert_eq!(again, c);
        }
        Err(e) => assert!(e.message.starts_with("fuzz/config.json: "), "{}", e.message),
    }
});
