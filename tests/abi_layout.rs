//! Pins every field's offset and size of the C ABI's options and request structs, as in ABI
//! 0.2 (the first version of the struct rule in docs/abi.md). A field appended later must start
//! at or past its struct's 0.2 size, never in the previous tail padding, and must be added here
//! with its offset; the last check fails when a struct grows without an entry here.
use model_context::ffi::*;
use std::mem::{offset_of, size_of};

/// `(field, offset, size)` of each field, in order, and the struct's size in ABI 0.2.
struct Layout {
    name: &'static str,
    size_0_2: usize,
    fields: Vec<(&'static str, usize, usize, usize)>,
    size: usize,
    align: usize,
}

macro_rules! field {
    ($t:ty, $f:ident) => {{
        let v = std::mem::MaybeUninit::<$t>::uninit();
        // SAFETY: only the field's address is taken, never read.
        let size = unsafe { std::mem::size_of_val(&*std::ptr::addr_of!((*v.as_ptr()).$f)) };
        (stringify!($f), offset_of!($t, $f), size)
    }};
}

macro_rules! layout {
    ($t:ty, $size:expr, [$(($f:ident, $off:expr, $sz:expr)),* $(,)?]) => {
        Layout {
            name: stringify!($t),
            size_0_2: $size,
            fields: vec![$({
                let (n, o, s) = field!($t, $f);
                assert_eq!((o, s), ($off, $sz), "{}.{} moved or changed size", stringify!($t), n);
                (n, o, s, $off)
            }),*],
            size: size_of::<$t>(),
            align: std::mem::align_of::<$t>(),
        }
    };
}

fn layouts() -> Vec<Layout> {
    vec![
        layout!(
            mc_open_options,
            64,
            [
                (struct_size, 0, 4),
                (device, 8, 8),
                (fold_ln, 16, 1),
                (center_writing_weights, 17, 1),
                (center_unembed, 18, 1),
                (fold_value_biases, 19, 1),
                (cache_dir, 24, 8),
                (base_url, 32, 8),
                (offline, 40, 1),
                (progress, 48, 8),
                (progress_user_data, 56, 8),
            ]
        ),
        layout!(
            mc_weight_request,
            32,
            [
                (struct_size, 0, 4),
                (location, 4, 4),
                (layer, 8, 4),
                (normalize_dim, 12, 4),
                (dtype, 16, 4),
                (device, 24, 8),
            ]
        ),
        layout!(
            mc_model_options,
            12,
            [
                (struct_size, 0, 4),
                (simplify, 4, 1),
                (dtype, 8, 4),
                (skip_reorder, 12, 1),
                (reserved, 13, 3),
            ]
        ),
        layout!(
            mc_forward_request,
            120,
            [
                (struct_size, 0, 4),
                (token_type, 4, 4),
                (tokens, 8, 8),
                (n_tokens, 16, 8),
                (batch, 24, 8),
                (seq_len, 32, 8),
                (pad, 40, 8),
                (n_pad, 48, 8),
                (activations, 56, 8),
                (layers, 64, 8),
                (n_activations, 72, 8),
                (edits, 80, 8),
                (n_edits, 88, 8),
                (start_residual, 96, 8),
                (start_layer, 104, 4),
                (end_layer, 108, 4),
                (logits, 112, 4),
                (reserved, 116, 4),
                // Appended within 0.2: the backward pass.
                (objective, 120, 8),
                (grad_activations, 128, 8),
                (grad_layers, 136, 8),
                (n_grads, 144, 8),
            ]
        ),
        layout!(
            mc_objective,
            88,
            [
                (struct_size, 0, 4),
                (kind, 4, 4),
                (tokens, 8, 8),
                (n_tokens, 16, 8),
                (other_tokens, 24, 8),
                (n_other_tokens, 32, 8),
                (positions, 40, 8),
                (n_positions, 48, 8),
                (targets, 56, 8),
                (n_targets, 64, 8),
                (location, 72, 4),
                (layer, 76, 4),
                (direction, 80, 8),
            ]
        ),
        layout!(
            mc_edit,
            48,
            [
                (struct_size, 0, 4),
                (location, 4, 4),
                (layer, 8, 4),
                (op, 12, 4),
                (value, 16, 8),
                (operand, 24, 8),
                (selection, 32, 8),
                (n_selection, 40, 8),
            ]
        ),
        layout!(
            mc_sample_options,
            40,
            [
                (struct_size, 0, 4),
                (max_new_tokens, 4, 4),
                (stop_at_end_of_text, 8, 1),
                (temperature, 16, 8),
                (top_p, 24, 8),
                (seed, 32, 8),
                // Appended within 0.2: top-k.
                (top_k, 40, 4),
                (reserved, 44, 4),
            ]
        ),
        layout!(
            mc_append_request,
            104,
            [
                (struct_size, 0, 4),
                (token_type, 4, 4),
                (seq_ids, 8, 8),
                (n_seq_ids, 16, 8),
                (tokens, 24, 8),
                (n_tokens, 32, 8),
                (offsets, 40, 8),
                (n_offsets, 48, 8),
                (activations, 56, 8),
                (layers, 64, 8),
                (n_activations, 72, 8),
                (edits, 80, 8),
                (n_edits, 88, 8),
                (logits, 96, 4),
                (reserved, 100, 4),
            ]
        ),
    ]
}

/// `mc_axis_selection` is fixed forever (it has no struct_size): a pointer and a count.
#[test]
fn axis_selection_is_fixed() {
    assert_eq!(size_of::<mc_axis_selection>(), 16);
    assert_eq!(offset_of!(mc_axis_selection, n_indices), 8);
}

#[test]
fn every_field_is_pinned_and_appended_fields_start_past_the_0_2_size() {
    for l in layouts() {
        let (first, _, _, _) = l.fields[0];
        assert_eq!(first, "struct_size", "{}: struct_size first", l.name);
        let mut end_0_2 = 0;
        for &(name, offset, size, _) in &l.fields {
            if offset < l.size_0_2 {
                end_0_2 = end_0_2.max(offset + size);
            } else {
                assert!(
                    offset >= l.size_0_2,
                    "{}.{name} lands in 0.2's tail",
                    l.name
                );
            }
        }
        // No tail padding in 0.2: a new field cannot hide inside the old size.
        assert_eq!(
            end_0_2, l.size_0_2,
            "{}: tail padding in the 0.2 layout",
            l.name
        );
        let end = l.fields.iter().map(|f| f.1 + f.2).max().unwrap();
        let align = l.align;
        assert_eq!(
            l.size,
            end.div_ceil(align) * align,
            "{}: a field is missing from this table",
            l.name
        );
    }
}

/// `init` refuses one byte below the 0.2 size and accepts it exactly.
#[test]
fn init_accepts_exactly_the_0_2_size_and_up() {
    fn check<T>(f: unsafe extern "C" fn(*mut T, usize) -> i32, size_0_2: usize) {
        let mut buf = vec![0xABu8; size_0_2 + 16];
        let p = buf.as_mut_ptr() as *mut T;
        assert_eq!(unsafe { f(p, size_0_2 - 1) }, MC_ERR_INVALID_ARGUMENT);
        assert!(buf.iter().all(|&b| b == 0xAB), "a refused init wrote");
        assert_eq!(unsafe { f(p, size_0_2) }, MC_OK);
        assert_eq!(
            u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize,
            size_0_2
        );
        assert!(
            buf[size_0_2..].iter().all(|&b| b == 0xAB),
            "init wrote past size"
        );
        assert_eq!(unsafe { f(p, size_0_2 + 16) }, MC_OK);
        assert!(buf[size_0_2..].iter().all(|&b| b == 0), "tail not zeroed");
    }
    check(mc_open_options_init, 64);
    check(mc_weight_request_init, 32);
    check(mc_model_options_init, 12);
    check(mc_forward_request_init, 120);
    check(mc_edit_init, 48);
    check(mc_objective_init, 88);
    check(mc_append_request_init, 104);
    check(mc_sample_options_init, 40);
}
