//! The safetensors reader on files built byte by byte here: values, zero-copy mapping,
//! views, and every way a header can lie.

use model_context_formats::{load_safetensors, load_safetensors_bytes, DType, ErrorKind};
use std::io::Write;

mod meter;

#[global_allocator]
static METER: meter::Meter = meter::Meter;

/// A safetensors file from a JSON header and the data bytes (header padded to 8 bytes).
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn as_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn two_tensors() -> Vec<u8> {
    let mut data = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    data.extend([7u8, 8]);
    file(
        r#"{"__metadata__": {"format": "pt"}, "b": {"dtype": "U8", "shape": [2], "data_offsets": [24, 26]}, "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}"#,
        &data,
    )
}

#[test]
fn reads_tensors_in_file_order_as_mapped_views() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, two_tensors()).unwrap();
    let tensors = load_safetensors(&path).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let a = &tensors[0].1;
    assert_eq!(
        (a.dtype, &a.shape[..], &a.strides[..]),
        (DType::F32, &[2i64, 3][..], &[3i64, 1][..])
    );
    assert!(
        a.storage.is_mapped(),
        "an aligned F32 tensor is a view of the mapping"
    );
    assert_eq!(
        as_f32(&a.to_contiguous_bytes()),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(tensors[1].1.to_contiguous_bytes(), [7, 8]);

    // Views: transposed and narrowed without a copy, checked against the storage.
    let t = a.transposed(0, 1).unwrap();
    assert_eq!(
        (&t.shape[..], &t.strides[..]),
        (&[3i64, 2][..], &[1i64, 3][..])
    );
    assert_eq!(
        as_f32(&t.to_contiguous_bytes()),
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    let n = a.narrowed(1, 1, 2).unwrap();
    assert_eq!(as_f32(&n.to_contiguous_bytes()), [2.0, 3.0, 5.0, 6.0]);
    assert!(std::sync::Arc::ptr_eq(&n.storage, &a.storage));
    let e = a.narrowed(1, 2, 2).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Shape, "{}", e.message);
    let e = a.view(4, vec![2, 2], vec![1, 1]).unwrap_err();
    assert!(e.message.contains("reaches element"), "{}", e.message);
    assert!(a.transposed(0, 2).is_err());
}

#[test]
fn misaligned_tensors_are_copied_with_the_right_values() {
    let mut data = vec![9u8];
    data.extend(f32s(&[0.5, -1.5]));
    let bytes = file(
        r#"{"u": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "f": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}}"#,
        &data,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let tensors = load_safetensors(&path).unwrap();
    let f = &tensors[1].1;
    assert!(!f.storage.is_mapped(), "misaligned bytes must be copied");
    assert_eq!(f.data_ptr() as usize % 4, 0);
    assert_eq!(as_f32(&f.to_contiguous_bytes()), [0.5, -1.5]);
    // The in-memory reader copies everything and agrees.
    let again = load_safetensors_bytes(&bytes, "mem").unwrap();
    assert_eq!(again[1].1.to_contiguous_bytes(), f.to_contiguous_bytes());
}

#[test]
fn zero_sized_and_scalar_tensors() {
    let bytes = file(
        r#"{"s": {"dtype": "F64", "shape": [], "data_offsets": [0, 8]}, "z": {"dtype": "F32", "shape": [0, 5], "data_offsets": [8, 8]}}"#,
        &2.5f64.to_le_bytes(),
    );
    let t = load_safetensors_bytes(&bytes, "mem").unwrap();
    assert_eq!(t.len(), 2);
    let s = t.iter().find(|(n, _)| n == "s").unwrap();
    assert_eq!(s.1.shape, Vec::<i64>::new());
    assert_eq!(s.1.to_contiguous_bytes(), 2.5f64.to_le_bytes());
    let z = t.iter().find(|(n, _)| n == "z").unwrap();
    assert_eq!(z.1.numel(), 0);
}

fn expect(bytes: &[u8], kind: ErrorKind, needles: &[&str]) {
    let e = load_safetensors_bytes(bytes, "bad.safetensors").unwrap_err();
    assert_eq!(e.kind, kind, "{}", e.message);
    assert!(e.message.starts_with("bad.safetensors: "), "{}", e.message);
    for n in needles {
        assert!(e.message.contains(n), "{:?} lacks {n:?}", e.message);
    }
}

#[test]
fn hostile_headers_are_rejected_with_the_cause() {
    use ErrorKind::*;
    let d8 = f32s(&[1.0, 2.0]);
    expect(&[1, 2, 3], Format, &["too short"]);
    expect(&u64::MAX.to_le_bytes(), Format, &["exceeds"]);
    expect(&1000u64.to_le_bytes(), Format, &["past the end"]);
    expect(&file("{\"a\": ", &[]), Format, &["malformed JSON"]);
    expect(&file("[1, 2]", &[]), Format, &["not an object"]);
    expect(
        &file(r#"{"a": 3}"#, &[]),
        Format,
        &["'a'", "expected an object"],
    );
    let entry = |body: &str| file(&format!(r#"{{"w": {{{body}}}}}"#), &d8);
    expect(
        &entry(r#""dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": 1"#),
        Format,
        &["'w'", "unknown header field 'extra'"],
    );
    expect(
        &entry(r#""dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]"#),
        Unsupported,
        &["'w'", "F8_E4M3"],
    );
    expect(
        &entry(r#""dtype": "F32", "shape": [3], "data_offsets": [0, 8]"#),
        Format,
        &["'w'", "needs 12 bytes", "hold 8"],
    );
    expect(
        &entry(r#""dtype": "F32", "shape": [-2], "data_offsets": [0, 8]"#),
        Format,
        &["'shape'", "non-negative"],
    );
    expect(
        &entry(r#""dtype": "F32", "shape": [2], "data_offsets": [8, 0]"#),
        Format,
        &["backwards"],
    );
    expect(
        &entry(r#""dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]"#),
        Format,
        &["[begin, end]"],
    );
    expect(
        &entry(r#""dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]"#),
        Format,
        &["overflows"],
    );
    expect(
        &entry(r#""shape": [2], "data_offsets": [0, 8]"#),
        Format,
        &["'dtype'"],
    );
    // Ranges must tile the data section: a gap, an overlap, a range past the end, trailing bytes.
    expect(
        &file(
            r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
            &d8,
        ),
        Format,
        &["'a' starts at data byte 4", "gap"],
    );
    expect(
        &file(
            r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
            &d8,
        ),
        Format,
        &["overlap"],
    );
    expect(
        &file(
            r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#,
            &d8,
        ),
        Format,
        &["cover 16", "holds 8"],
    );
    expect(
        &file(
            r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
            &d8,
        ),
        Format,
        &["cover 4", "holds 8"],
    );
    expect(
        &file(r#"{"__metadata__": {"k": 1}}"#, &[]),
        Format,
        &["__metadata__"],
    );
}

#[test]
fn missing_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_safetensors(&dir.path().join("none.safetensors")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("none.safetensors"), "{}", e.message);
    let empty = dir.path().join("empty.safetensors");
    std::fs::File::create(&empty).unwrap().flush().unwrap();
    let e = load_safetensors(&empty).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format, "{}", e.message);
}

#[test]
fn terabyte_claims_and_deep_headers_cost_bounded_memory_and_time() {
    use std::time::Duration;
    let d8 = f32s(&[1.0, 2.0]);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "a 4 TiB tensor over 8 bytes",
            file(
                r#"{"w": {"dtype": "F32", "shape": [1099511627776], "data_offsets": [0, 4398046511104]}}"#,
                &d8,
            ),
            &["cover 4398046511104", "holds 8"],
        ),
        (
            "a 4 TiB tensor after a small one",
            file(
                r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {"dtype": "U8", "shape": [4398046511104], "data_offsets": [8, 4398046511112]}}"#,
                &d8,
            ),
            &["cover 4398046511112", "holds 8"],
        ),
        (
            "a header length of 99 999 992 bytes over a short file",
            [99_999_992u64.to_le_bytes().to_vec(), vec![b' '; 64]].concat(),
            &["past the end"],
        ),
        (
            "a header nested 100 000 deep",
            file(&"[".repeat(100_000), &[]),
            &["malformed JSON", "recursion limit"],
        ),
    ];
    for (what, bytes, needles) in cases {
        let (r, cost) = meter::measure(|| load_safetensors_bytes(&bytes, "bad.safetensors"));
        let e = r.err().unwrap_or_else(|| panic!("{what}: loaded"));
        assert_eq!(e.kind, ErrorKind::Format, "{what}: {}", e.message);
        for n in needles {
            assert!(e.message.contains(n), "{what}: {:?} lacks {n:?}", e.message);
        }
        meter::assert_bounded(what, cost, 1 << 20, Duration::from_secs(5));
    }
}
