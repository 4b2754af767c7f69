//! Edge cases built byte by byte here (no torch needed): pickle opcodes, limits, zip layout.

use std::io::Write;
use std::time::Duration;

use model_context_formats::{load_pt_bytes, DType, ErrorKind, PtValue, Storage, TensorRecord};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

mod meter;

#[global_allocator]
static METER: meter::Meter = meter::Meter;

// ---- pickle builders (protocol 2 opcodes, as torch writes them) ----------------------------

fn s(text: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((text.len() as u32).to_le_bytes());
    v.extend(text.as_bytes());
    v
}

fn int(v: i64) -> Vec<u8> {
    match v {
        0..=255 => vec![b'K', v as u8],
        _ => {
            let mut out = vec![0x8a, 8];
            out.extend(v.to_le_bytes());
            out
        }
    }
}

fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![b'('];
    for i in items {
        v.extend(i);
    }
    v.push(b't');
    v
}

fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

fn storage(class: &str, key: &str, numel: i64) -> Vec<u8> {
    let mut v = tuple(&[
        s("storage"),
        global("torch", class),
        s(key),
        s("cpu"),
        int(numel),
    ]);
    v.push(b'Q');
    v
}

fn tensor_with(storage_pid: Vec<u8>, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let mut hooks = global("collections", "OrderedDict");
    hooks.extend(b")R");
    let mut v = global("torch._utils", "_rebuild_tensor_v2");
    v.extend(tuple(&[
        storage_pid,
        int(offset),
        tuple(&size.iter().map(|&x| int(x)).collect::<Vec<_>>()),
        tuple(&stride.iter().map(|&x| int(x)).collect::<Vec<_>>()),
        vec![0x89],
        hooks,
    ]));
    v.push(b'R');
    v
}

fn tensor(
    class: &str,
    key: &str,
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Vec<u8> {
    tensor_with(storage(class, key, numel), offset, size, stride)
}

fn pickle(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 2];
    v.extend(body);
    v.push(b'.');
    v
}

fn dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut v = b"}(".to_vec();
    for (k, t) in entries {
        v.extend(s(k));
        v.extend(t);
    }
    v.push(b'u');
    v
}

/// A zip laid out like torch's, with the given compression for the data records.
fn archive_with(pkl: &[u8], records: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut z = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    z.start_file("arc/data.pkl", stored).unwrap();
    z.write_all(pkl).unwrap();
    z.start_file("arc/byteorder", stored).unwrap();
    z.write_all(b"little").unwrap();
    for (key, data) in records {
        let opts = SimpleFileOptions::default()
            .compression_method(method)
            .with_alignment(64);
        z.start_file(format!("arc/data/{key}"), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn archive(pkl: &[u8], records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    archive_with(pkl, records, CompressionMethod::Stored)
}

fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

fn load(bytes: Vec<u8>) -> Result<PtValue, model_context_formats::FormatError> {
    load_pt_bytes(bytes, "built.pt")
}

fn single(v: PtValue) -> TensorRecord {
    match v {
        PtValue::Tensor(t) => t,
        PtValue::Dict(_) => panic!("expected a tensor"),
    }
}

#[track_caller]
fn expect(bytes: Vec<u8>, kind: ErrorKind, parts: &[&str]) {
    let e = load(bytes).expect_err("expected an error");
    assert_eq!(e.kind, kind, "{}", e.message);
    assert!(e.message.starts_with("built.pt: "), "{}", e.message);
    for p in parts {
        assert!(e.message.contains(p), "message lacks {p:?}: {}", e.message);
    }
}

fn f32_values(t: &TensorRecord) -> Vec<f32> {
    t.to_contiguous_bytes()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

// ---- tests -------------------------------------------------------------------------------------

#[test]
fn records_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Storage>();
    check::<TensorRecord>();
    check::<PtValue>();
}

#[test]
fn reads_a_plain_tensor_and_a_strided_view() {
    let pkl = pickle(&tensor("FloatStorage", "0", 12, 1, &[2, 3], &[1, 4]));
    let t = single(load(archive(&pkl, &[("0", f32s(12))])).unwrap());
    assert_eq!(
        (t.dtype, t.numel(), t.is_contiguous()),
        (DType::F32, 6, false)
    );
    assert_eq!(f32_values(&t), [1.0, 5.0, 9.0, 2.0, 6.0, 10.0]);
    assert!(!t.storage.is_mapped(), "load_pt_bytes copies");
    assert_eq!(t.storage.as_ptr() as usize % 64, 0);
}

#[test]
fn stride_zero_and_size_one_dims() {
    let pkl = pickle(&tensor("FloatStorage", "0", 3, 2, &[4, 1], &[0, 7]));
    let t = single(load(archive(&pkl, &[("0", f32s(3))])).unwrap());
    assert_eq!(f32_values(&t), [2.0; 4]);
    let pkl = pickle(&tensor("FloatStorage", "0", 3, 0, &[1, 3], &[99, 1]));
    let t = single(load(archive(&pkl, &[("0", f32s(3))])).unwrap());
    assert!(t.is_contiguous());
}

#[test]
fn deflated_records_are_inflated_exactly() {
    let pkl = pickle(&tensor("DoubleStorage", "7", 1000, 0, &[1000], &[1]));
    let data: Vec<u8> = (0..1000).flat_map(|i| (i as f64).to_le_bytes()).collect();
    let t = single(
        load(archive_with(
            &pkl,
            &[("7", data.clone())],
            CompressionMethod::Deflated,
        ))
        .unwrap(),
    );
    assert_eq!(t.to_contiguous_bytes(), data);
    // A storage claiming far more than the compressed record could ever inflate to is refused
    // before anything is allocated.
    let pkl = pickle(&tensor("DoubleStorage", "7", 1 << 40, 0, &[1000], &[1]));
    expect(
        archive_with(&pkl, &[("7", data)], CompressionMethod::Deflated),
        ErrorKind::Format,
        &["'arc/data/7'", "needs 8796093022208 bytes"],
    );
}

/// Overwrites the uncompressed size of `entry` in the central directory and local header.
fn patch_declared_size(zip: &mut [u8], entry: &str, size: u32) {
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let mut cd = u32::from_le_bytes(zip[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    loop {
        assert_eq!(&zip[cd..cd + 4], b"PK\x01\x02");
        let n = u16::from_le_bytes([zip[cd + 28], zip[cd + 29]]) as usize;
        let m = u16::from_le_bytes([zip[cd + 30], zip[cd + 31]]) as usize;
        let k = u16::from_le_bytes([zip[cd + 32], zip[cd + 33]]) as usize;
        if &zip[cd + 46..cd + 46 + n] == entry.as_bytes() {
            zip[cd + 24..cd + 28].copy_from_slice(&size.to_le_bytes());
            let local = u32::from_le_bytes(zip[cd + 42..cd + 46].try_into().unwrap()) as usize;
            zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
            return;
        }
        cd += 46 + n + m + k;
    }
}

#[test]
fn lying_declared_sizes_allocate_nothing_big() {
    // The central directory claims 2 GiB for a record of a few compressed bytes, and the pickle
    // asks for 2 GiB: refused from the compressed size alone.
    let pkl = pickle(&tensor("FloatStorage", "0", 1 << 29, 0, &[4], &[1]));
    let mut zip = archive_with(&pkl, &[("0", f32s(4))], CompressionMethod::Deflated);
    patch_declared_size(&mut zip, "arc/data/0", 1 << 31);
    expect(
        zip,
        ErrorKind::Format,
        &["'arc/data/0'", "too few to inflate to the 2147483648 bytes"],
    );
    // A declared size larger than what the stream inflates to: the stream ends early.
    let pkl = pickle(&tensor("FloatStorage", "0", 8, 0, &[4], &[1]));
    let mut zip = archive_with(&pkl, &[("0", f32s(4))], CompressionMethod::Deflated);
    patch_declared_size(&mut zip, "arc/data/0", 32);
    expect(
        zip,
        ErrorKind::Format,
        &["'arc/data/0' holds 16 bytes", "needs 32 bytes"],
    );
}

#[test]
fn record_longer_than_the_storage_is_accepted() {
    let pkl = pickle(&tensor("FloatStorage", "0", 2, 0, &[2], &[1]));
    let t = single(load(archive(&pkl, &[("0", f32s(5))])).unwrap());
    assert_eq!((t.storage.len(), f32_values(&t)), (8, vec![0.0, 1.0]));
}

#[test]
fn shared_storage_is_one_arc_and_duplicate_keys_keep_first_place() {
    let pid = storage("FloatStorage", "0", 6);
    let mut second = global("torch._utils", "_rebuild_tensor_v2");
    // Second tensor reuses the memoized persistent id through BINGET.
    let mut first_pid = pid.clone();
    first_pid.splice(
        first_pid.len() - 1..first_pid.len() - 1,
        b"q\x05".iter().copied(),
    );
    let mut body = b"}(".to_vec();
    body.extend(s("a"));
    body.extend(tensor_with(first_pid, 0, &[6], &[1]));
    body.extend(s("b"));
    second.extend(tuple(&[
        b"h\x05Q".to_vec(),
        int(2),
        tuple(&[int(2)]),
        tuple(&[int(1)]),
        vec![0x89],
        b"N".to_vec(),
    ]));
    second.push(b'R');
    body.extend(second);
    body.extend(s("a"));
    body.extend(tensor("FloatStorage", "1", 1, 0, &[], &[]));
    body.push(b'u');
    let v = load(archive(&pickle(&body), &[("0", f32s(6)), ("1", f32s(1))])).unwrap();
    let PtValue::Dict(d) = v else {
        panic!("expected a dict")
    };
    let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(
        d[0].1.shape,
        Vec::<i64>::new(),
        "the later 'a' wins, in the first place"
    );
    assert_eq!(f32_values(&d[1].1), [2.0, 3.0]);
}

#[test]
fn parameter_and_ordered_dict_with_metadata() {
    let mut p = global("torch._utils", "_rebuild_parameter");
    let mut hooks = global("collections", "OrderedDict");
    hooks.extend(b")R");
    p.extend(tuple(&[
        tensor("HalfStorage", "0", 2, 0, &[2], &[1]),
        vec![0x88],
        hooks,
    ]));
    p.push(b'R');
    let mut od = global("collections", "OrderedDict");
    od.extend(b")R(");
    od.extend(s("w"));
    od.extend(&p);
    od.extend(b"u}");
    od.extend(s("_metadata"));
    od.extend(b"}");
    od.extend(s(""));
    od.extend(b"}");
    od.extend(s("version"));
    od.extend(int(1));
    od.extend(b"sssb");
    let v = load(archive(&pickle(&od), &[("0", vec![0, 0x3c, 0, 0xc0])])).unwrap();
    let PtValue::Dict(d) = v else {
        panic!("expected a dict")
    };
    assert_eq!(
        (d.len(), d[0].0.as_str(), d[0].1.dtype),
        (1, "w", DType::F16)
    );
}

#[test]
fn every_storage_class_maps_to_its_dtype() {
    for (class, dtype) in [
        ("FloatStorage", DType::F32),
        ("HalfStorage", DType::F16),
        ("BFloat16Storage", DType::BF16),
        ("DoubleStorage", DType::F64),
        ("LongStorage", DType::I64),
        ("IntStorage", DType::I32),
        ("ShortStorage", DType::I16),
        ("CharStorage", DType::I8),
        ("ByteStorage", DType::U8),
        ("BoolStorage", DType::Bool),
    ] {
        let pkl = pickle(&tensor(class, "0", 3, 0, &[3], &[1]));
        let t = single(load(archive(&pkl, &[("0", vec![1; 3 * dtype.size()])])).unwrap());
        assert_eq!(t.dtype, dtype, "{class}");
    }
}

#[test]
fn forbidden_globals_are_named() {
    for (module, name) in [
        ("os", "system"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch", "UntypedStorage"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("__builtin__", "getattr"),
    ] {
        let mut body = global(module, name);
        body.extend(tuple(&[s("x")]));
        body.push(b'R');
        expect(
            archive(&pickle(&body), &[]),
            ErrorKind::Forbidden,
            &[&format!("'{module}.{name}'")],
        );
    }
    // A forbidden storage class inside a persistent id.
    let pkl = pickle(&tensor("ComplexFloatStorage", "0", 1, 0, &[1], &[1]));
    expect(
        archive(&pkl, &[]),
        ErrorKind::Forbidden,
        &["'torch.ComplexFloatStorage'"],
    );
}

#[test]
fn malformed_pickles_are_format_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x80\x02R.".to_vec(), "stack underflow"),
        (b"\x80\x02]".to_vec(), "ends without a STOP"),
        (b"\x80\x02h\x05.".to_vec(), "memo entry 5 is missing"),
        (
            b"\x80\x02K\x01\x81.".to_vec(),
            "unsupported pickle opcode 0x81",
        ),
        (b"\x80\x02X\xff\xff\xff\x7f".to_vec(), "truncated"),
        (
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
            "data.pkl",
        ),
        (
            b"\x80\x02]q\x00h\x00a.".to_vec(),
            "top-level object is a list",
        ),
        (b"\x80\x02K\x01.".to_vec(), "top-level object is a int"),
        (
            pickle(&dict(&[("x", int(3))])),
            "dict value for key 'x' is a int",
        ),
        (
            pickle(
                &[
                    b"}".to_vec(),
                    int(1),
                    tensor("FloatStorage", "0", 1, 0, &[], &[]),
                    b"s".to_vec(),
                ]
                .concat(),
            ),
            "dict key is a int",
        ),
        (
            pickle(&[b"(".repeat(300), b"t".repeat(300)].concat()),
            "nests deeper than 256",
        ),
        (
            pickle(&[b"]".repeat(300), b"a".repeat(299)].concat()),
            "nests deeper than 256",
        ),
        (
            pickle(&[tensor("FloatStorage", "0", 1, 0, &[], &[]), b"}b".to_vec()].concat()),
            "BUILD on a tensor",
        ),
        (
            pickle(
                &[
                    global("collections", "OrderedDict"),
                    tuple(&[int(1)]),
                    b"R".to_vec(),
                ]
                .concat(),
            ),
            "OrderedDict called with arguments",
        ),
        (
            pickle(&[global("torch", "FloatStorage"), b")R".to_vec()].concat()),
            "cannot be called",
        ),
        (
            pickle(&[tuple(&[s("storage")]), b"Q".to_vec()].concat()),
            "persistent id",
        ),
        (
            pickle(&[s("x"), b")R".to_vec()].concat()),
            "REDUCE calls a str",
        ),
    ];
    for (pkl, part) in cases {
        expect(archive(&pkl, &[("0", f32s(1))]), ErrorKind::Format, &[part]);
    }
}

#[test]
fn cyclic_and_shared_objects_terminate() {
    // A list appended to itself 200 times stays within the depth limit and ends.
    let mut body = b"]q\x00".to_vec();
    for _ in 0..200 {
        body.extend(b"h\x00a");
    }
    expect(
        archive(&pickle(&body), &[]),
        ErrorKind::Format,
        &["top-level object is a list"],
    );
    // A billion-laughs shape: each level references the previous one twice (no copies made).
    let mut body = b"]q\x00".to_vec();
    for i in 0..200u8 {
        body.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    expect(
        archive(&pickle(&body), &[]),
        ErrorKind::Format,
        &["top-level object is a tuple"],
    );
}

#[test]
fn protocol_and_integer_edge_cases() {
    expect(
        archive(b"\x80\x06.", &[]),
        ErrorKind::Unsupported,
        &["pickle protocol 6"],
    );
    // Sizes given as 8-byte LONG1 work; a 9-byte one beyond i64 is a shape error.
    let pkl = pickle(&tensor("FloatStorage", "0", 4, 0, &[300, 0], &[1, 1]));
    let t = single(load(archive(&pkl, &[("0", f32s(4))])).unwrap());
    assert_eq!(
        (t.shape.clone(), t.numel(), t.to_contiguous_bytes().len()),
        (vec![300, 0], 0, 0)
    );
    let mut big = tensor("FloatStorage", "0", 4, 0, &[4], &[1]);
    let at = big.windows(2).position(|w| w == b"(K").unwrap();
    // Replace the first size element (K 4) by a 9-byte LONG1 of 2^64.
    let pos = big[at + 1..]
        .windows(2)
        .position(|w| w == b"K\x04")
        .unwrap()
        + at
        + 1;
    big.splice(pos..pos + 2, [0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(
        archive(&pickle(&big), &[("0", f32s(4))]),
        ErrorKind::Shape,
        &["does not fit in 64 bits"],
    );
}

#[test]
fn bad_geometry_is_a_shape_error() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            tensor("FloatStorage", "0", 4, 0, &[2, 2], &[2]),
            "size has 2 dimensions but stride has 1",
        ),
        (
            tensor("FloatStorage", "0", 4, 0, &[-1], &[1]),
            "negative size -1",
        ),
        (
            tensor("FloatStorage", "0", 4, -1, &[1], &[1]),
            "negative storage offset -1",
        ),
        (
            tensor("FloatStorage", "0", 4, 0, &[2, 2], &[3, 1]),
            "reaches element 4",
        ),
        (
            tensor("FloatStorage", "0", 4, 5, &[0], &[1]),
            "past the end",
        ),
        (
            tensor("FloatStorage", "0", 4, 0, &[2, 1 << 62], &[0, 0]),
            "overflows",
        ),
        (
            tensor("FloatStorage", "0", 4, 0, &[3, 3], &[1 << 62, 1 << 62]),
            "overflows",
        ),
        (
            tensor("FloatStorage", "0", 4, 0, &[1; 65], &[1; 65]),
            "65 dimensions",
        ),
        (
            tensor("FloatStorage", "0", -4, 0, &[1], &[1]),
            "negative element count",
        ),
    ];
    for (body, part) in cases {
        expect(
            archive(&pickle(&body), &[("0", f32s(4))]),
            ErrorKind::Shape,
            &[part],
        );
    }
}

#[test]
fn storages_must_agree_with_their_records() {
    // The same key used with two dtypes.
    let body = dict(&[
        ("a", tensor("FloatStorage", "0", 4, 0, &[4], &[1])),
        ("b", tensor("IntStorage", "0", 4, 0, &[4], &[1])),
    ]);
    expect(
        archive(&pickle(&body), &[("0", f32s(4))]),
        ErrorKind::Format,
        &["storage '0' is referenced both"],
    );
    // Short and missing records.
    let pkl = pickle(&tensor("FloatStorage", "0", 4, 0, &[4], &[1]));
    expect(
        archive(&pkl, &[("0", f32s(3))]),
        ErrorKind::Format,
        &["holds 12 bytes", "needs 16 bytes"],
    );
    expect(
        archive(&pkl, &[("1", f32s(4))]),
        ErrorKind::Format,
        &["missing record 'arc/data/0'"],
    );
    // Storage bytes overflowing u64.
    let pkl = pickle(&tensor("DoubleStorage", "0", 1 << 62, 0, &[1], &[1]));
    expect(
        archive(&pkl, &[("0", f32s(4))]),
        ErrorKind::Format,
        &["overflows"],
    );
}

#[test]
fn zip_layout_errors() {
    expect(Vec::new(), ErrorKind::Format, &["empty file"]);
    expect(
        b"PK\x03\x04 but nothing else".to_vec(),
        ErrorKind::Format,
        &["not a zip archive"],
    );
    // No data.pkl, and two top-level folders with one each.
    let mut z = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    z.start_file("a/version", opts).unwrap();
    z.write_all(b"3").unwrap();
    let no_pkl = z.finish().unwrap().into_inner();
    expect(no_pkl, ErrorKind::Format, &["no <folder>/data.pkl"]);
    let mut z = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for f in ["a/data.pkl", "b/data.pkl"] {
        z.start_file(f, opts).unwrap();
        z.write_all(b"\x80\x02N.").unwrap();
    }
    expect(
        z.finish().unwrap().into_inner(),
        ErrorKind::Format,
        &["several data.pkl"],
    );
    // An unknown byteorder.
    let mut z = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("a/data.pkl", opts).unwrap();
    z.write_all(b"\x80\x02N.").unwrap();
    z.start_file("a/byteorder", opts).unwrap();
    z.write_all(b"middle").unwrap();
    expect(
        z.finish().unwrap().into_inner(),
        ErrorKind::Format,
        &["byteorder holds 'middle'"],
    );
}

#[test]
fn truncations_of_a_valid_archive_never_panic() {
    let body = dict(&[
        ("a", tensor("FloatStorage", "0", 8, 0, &[2, 4], &[4, 1])),
        ("b", tensor("LongStorage", "1", 3, 1, &[2], &[1])),
    ]);
    let full = archive_with(
        &pickle(&body),
        &[("0", f32s(8)), ("1", vec![7; 24])],
        CompressionMethod::Deflated,
    );
    assert!(load(full.clone()).is_ok());
    for cut in 0..full.len() {
        let _ = load(full[..cut].to_vec());
        let mut flipped = full.clone();
        flipped[cut] ^= 0x55;
        if let Ok(PtValue::Dict(d)) = load(flipped) {
            for (_, t) in d.iter().filter(|(_, t)| t.numel() <= 1 << 24) {
                let _ = t.to_contiguous_bytes();
            }
        }
    }
}

// ---- hostile archives: overlapping and out-of-range entries, bombs, bounded cost ------------

/// Offset of `entry`'s record in the central directory.
fn central_record(zip: &[u8], entry: &str) -> usize {
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let mut cd = u32::from_le_bytes(zip[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    loop {
        assert_eq!(&zip[cd..cd + 4], b"PK\x01\x02");
        let n = u16::from_le_bytes([zip[cd + 28], zip[cd + 29]]) as usize;
        let m = u16::from_le_bytes([zip[cd + 30], zip[cd + 31]]) as usize;
        let k = u16::from_le_bytes([zip[cd + 32], zip[cd + 33]]) as usize;
        if &zip[cd + 46..cd + 46 + n] == entry.as_bytes() {
            return cd;
        }
        cd += 46 + n + m + k;
    }
}

/// Makes the central directory entry `alias` describe the bytes of `target`: the same local
/// header, CRC and sizes (the overlapping-entries construction of "better zip bombs").
fn alias_entry(zip: &mut [u8], alias: &str, target: &str) {
    let (from, to) = (central_record(zip, target), central_record(zip, alias));
    let crc_and_sizes: [u8; 12] = zip[from + 16..from + 28].try_into().unwrap();
    let local: [u8; 4] = zip[from + 42..from + 46].try_into().unwrap();
    zip[to + 16..to + 28].copy_from_slice(&crc_and_sizes);
    zip[to + 42..to + 46].copy_from_slice(&local);
}

/// A state dict of `n` float tensors of `numel` elements, tensor i on storage "i".
fn dict_of(n: usize, numel: i64) -> Vec<u8> {
    let mut body = b"}(".to_vec();
    for i in 0..n {
        body.extend(s(&format!("t{i}")));
        body.extend(tensor(
            "FloatStorage",
            &i.to_string(),
            numel,
            0,
            &[numel],
            &[1],
        ));
    }
    body.push(b'u');
    pickle(&body)
}

/// Loads `bytes`, expecting a refusal of `kind` naming `parts`, within `max_bytes` of heap
/// beyond the input and 5 seconds.
#[track_caller]
fn expect_bounded(what: &str, bytes: Vec<u8>, kind: ErrorKind, parts: &[&str], max_bytes: usize) {
    let (result, cost) = meter::measure(|| load(bytes));
    let e = match result {
        Ok(_) => panic!("{what}: loaded, expected {kind:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, kind, "{what}: {}", e.message);
    for p in parts {
        assert!(
            e.message.contains(p),
            "{what}: message lacks {p:?}: {}",
            e.message
        );
    }
    eprintln!(
        "{what}: refused in {:?}, {} heap bytes at the peak",
        cost.elapsed, cost.peak_bytes
    );
    meter::assert_bounded(what, cost, max_bytes, Duration::from_secs(5));
}

#[test]
fn overlapping_entries_are_refused() {
    // Two storages whose records are the same bytes: entry 1 points at entry 0's local header.
    let body = dict(&[
        ("a", tensor("FloatStorage", "0", 4, 0, &[4], &[1])),
        ("b", tensor("FloatStorage", "1", 4, 0, &[4], &[1])),
    ]);
    let mut zip = archive(&pickle(&body), &[("0", f32s(4)), ("1", f32s(4))]);
    assert!(load(zip.clone()).is_ok());
    alias_entry(&mut zip, "arc/data/1", "arc/data/0");
    expect(
        zip,
        ErrorKind::Format,
        &["'arc/data/0'", "'arc/data/1'", "overlap"],
    );
}

#[test]
fn overlapping_entries_bomb_is_refused_before_inflating() {
    // 1000 storages of 1 MiB each, every record aliased to one deflated MiB of zeros (about
    // 1 KiB compressed): read entry by entry it would take 1000 MiB from a file of 270 KiB.
    const N: usize = 1000;
    let numel = 1 << 18;
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| (i.to_string(), vec![0u8; if i == 0 { 4 << 18 } else { 4 }]))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = records
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut zip = archive_with(&dict_of(N, numel), &refs, CompressionMethod::Deflated);
    for i in 1..N {
        alias_entry(&mut zip, &format!("arc/data/{i}"), "arc/data/0");
    }
    assert!(zip.len() < 512 << 10, "{} bytes", zip.len());
    expect_bounded(
        "overlapping bomb",
        zip,
        ErrorKind::Format,
        &["overlap", "'arc/data/0'"],
        16 << 20,
    );
}

#[test]
fn entries_out_of_range_are_refused() {
    let pkl = pickle(&tensor("FloatStorage", "0", 4, 0, &[4], &[1]));
    let good = archive(&pkl, &[("0", f32s(4))]);
    let len = good.len() as u32;
    // A local header offset past the end of the file.
    let mut zip = good.clone();
    let cd = central_record(&zip, "arc/data/0");
    zip[cd + 42..cd + 46].copy_from_slice(&(len + 1000).to_le_bytes());
    expect(zip, ErrorKind::Format, &["arc/data/0"]);
    // A compressed size reaching past the end of the file (stored: sizes agree).
    let mut zip = good.clone();
    let cd = central_record(&zip, "arc/data/0");
    for field in [cd + 20, cd + 24] {
        zip[field..field + 4].copy_from_slice(&(len * 4).to_le_bytes());
    }
    expect(
        zip,
        ErrorKind::Format,
        &["entry 'arc/data/0'", "reaches past the end"],
    );
    // A central directory that starts past the end of the file.
    let mut zip = good.clone();
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    zip[eocd + 16..eocd + 20].copy_from_slice(&(len * 2).to_le_bytes());
    expect(zip, ErrorKind::Format, &[]);
    // A central directory claiming more entries than it holds.
    let mut zip = good;
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    for field in [eocd + 8, eocd + 10] {
        zip[field..field + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    }
    expect(zip, ErrorKind::Format, &[]);
}

#[test]
fn hostile_archives_cost_bounded_memory_and_time() {
    let f32_16 = || vec![("0", f32s(4))];
    // Storage claims of terabytes over 16-byte records, stored and deflated.
    let tb = pickle(&tensor("FloatStorage", "0", 1 << 40, 0, &[4], &[1]));
    expect_bounded(
        "4 TiB stored",
        archive(&tb, &f32_16()),
        ErrorKind::Format,
        &["needs 4398046511104 bytes"],
        1 << 20,
    );
    expect_bounded(
        "4 TiB deflated",
        archive_with(&tb, &f32_16(), CompressionMethod::Deflated),
        ErrorKind::Format,
        &["holds 16 bytes", "needs 4398046511104 bytes"],
        1 << 20,
    );
    // A central directory claiming 4 GiB for a 16-byte deflated record, the pickle agreeing.
    let pkl = pickle(&tensor("FloatStorage", "0", (1 << 30) - 1, 0, &[4], &[1]));
    let mut zip = archive_with(&pkl, &f32_16(), CompressionMethod::Deflated);
    patch_declared_size(&mut zip, "arc/data/0", u32::MAX - 3);
    expect_bounded(
        "4 GiB declared",
        zip,
        ErrorKind::Format,
        &["too few to inflate"],
        1 << 20,
    );
    // Sizes whose element count overflows 64 bits, and a shape of 2^62 broadcast elements.
    expect_bounded(
        "element count overflow",
        archive(
            &pickle(&tensor(
                "FloatStorage",
                "0",
                4,
                0,
                &[1 << 40, 1 << 40],
                &[0, 0],
            )),
            &f32_16(),
        ),
        ErrorKind::Shape,
        &["overflows"],
        1 << 20,
    );
    // 100 000 nested lists, 100 000 nested MARKs, and 200 levels of shared references.
    let lists = pickle(&[b"]".repeat(100_000), b"a".repeat(99_999)].concat());
    expect_bounded(
        "nested lists",
        archive(&lists, &[]),
        ErrorKind::Format,
        &["nests deeper than 256"],
        32 << 20,
    );
    let marks = pickle(&b"(".repeat(100_000));
    expect_bounded(
        "nested marks",
        archive(&marks, &[]),
        ErrorKind::Format,
        &["nests deeper than 256 MARKs"],
        1 << 20,
    );
    let mut laughs = b"]q\x00".to_vec();
    for i in 0..200u8 {
        laughs.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    expect_bounded(
        "billion laughs",
        archive(&pickle(&laughs), &[]),
        ErrorKind::Format,
        &["top-level object is a tuple"],
        1 << 20,
    );
    // A million one-byte objects: refused by the object limit, not by running out of memory.
    let many = pickle(&b"N".repeat(1 << 20 | 1));
    expect_bounded(
        "object limit",
        archive(&many, &[]),
        ErrorKind::Format,
        &["more than 1048576 objects"],
        256 << 20,
    );
}

/// A broadcast view of one element that claims 2^51 elements: its copy is refused as out of
/// memory (naming the size) instead of aborting the process in the allocator.
#[test]
fn a_copy_larger_than_memory_is_out_of_memory() {
    let pkl = pickle(&tensor(
        "FloatStorage",
        "0",
        1,
        0,
        &[1 << 31, 1 << 20],
        &[0, 0],
    ));
    let t = single(load(archive(&pkl, &[("0", f32s(1))])).unwrap());
    let e = t.try_contiguous_bytes().expect_err("2^53 bytes");
    assert_eq!(e.kind, ErrorKind::OutOfMemory, "{}", e.message);
    assert!(
        e.message.contains("2251799813685248 x 4 bytes"),
        "{}",
        e.message
    );
    let small = single(
        load(archive(
            &pickle(&tensor("FloatStorage", "0", 4, 0, &[4], &[1])),
            &[("0", f32s(4))],
        ))
        .unwrap(),
    );
    assert_eq!(small.try_contiguous_bytes().unwrap(), f32s(4));
}
