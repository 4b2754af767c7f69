//! The `.pt` writer: what it writes reads back through this crate's reader with the same
//! dtype, shape and bytes (Python's `torch.load` is checked by the converter test of the
//! root crate, `tests/hf_golden.rs`).

use model_context_formats::{
    load_pt_bytes, load_tensor, save_tensor, tensor_pt_bytes, DType, ErrorKind, PtValue,
};

fn round_trip(dtype: DType, shape: &[i64], data: &[u8]) {
    let bytes = tensor_pt_bytes(dtype, shape, data).unwrap();
    let PtValue::Tensor(t) = load_pt_bytes(bytes, "w.pt").unwrap() else {
        panic!("expected a tensor");
    };
    assert_eq!(t.dtype, dtype);
    assert_eq!(t.shape, shape);
    assert!(t.is_contiguous());
    assert_eq!(t.to_contiguous_bytes(), data, "{dtype:?} {shape:?}");
}

#[test]
fn every_dtype_and_shape_reads_back() {
    let dtypes = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];
    for dtype in dtypes {
        for shape in [&[][..], &[0][..], &[5][..], &[3, 4][..], &[2, 1, 3][..]] {
            let n: i64 = shape.iter().product();
            let data: Vec<u8> = (0..n as usize * dtype.size())
                .map(|i| {
                    if dtype == DType::Bool {
                        (i % 2) as u8
                    } else {
                        (i * 7 + 1) as u8
                    }
                })
                .collect();
            round_trip(dtype, shape, &data);
        }
    }
    // Sizes that need each integer opcode (K, M, J) in the size tuple.
    round_trip(DType::U8, &[300, 1], &vec![3u8; 300]);
    round_trip(DType::U8, &[70000], &vec![4u8; 70000]);
}

#[test]
fn records_are_aligned_and_mapped_when_saved_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pt");
    let data: Vec<u8> = (0..24u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    save_tensor(&path, DType::F32, &[4, 6], &data).unwrap();
    let t = load_tensor(&path).unwrap();
    assert!(
        t.storage.is_mapped(),
        "the record must be 64-byte aligned and stored"
    );
    assert_eq!(t.to_contiguous_bytes(), data);
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["t.pt"]);
}

#[test]
fn data_that_does_not_match_the_shape_is_refused() {
    let e = tensor_pt_bytes(DType::F32, &[2, 3], &[0u8; 20]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Shape);
    assert!(e.message.contains("[2, 3]"), "{}", e.message);
    let e = tensor_pt_bytes(DType::F32, &[-1], &[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Shape);
    let dir = tempfile::tempdir().unwrap();
    let e = save_tensor(&dir.path().join("no/such/dir/t.pt"), DType::U8, &[1], &[1]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains("t.pt"), "{}", e.message);
}
