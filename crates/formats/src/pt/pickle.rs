//! A restricted unpickler for `data.pkl`: it only builds data (tuples, lists, dicts, tensors)
//! and resolves only the globals that rebuild tensors. Nothing named by the pickle is called.
//!
//! Objects live in an arena addressed by index, so shared and even cyclic references are plain
//! indices (no reference counting, no recursion). Every opcode creates at most one object, so
//! memory is bounded by the pickle length and by the explicit limits below.

use std::collections::HashMap;
use std::sync::Arc;

use super::{build_tensor, PtValue, TensorRecord};
use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::storage::Storage;

/// Deepest nesting of containers (and of MARKs) accepted.
const MAX_DEPTH: u16 = 256;
/// Most objects one pickle may create. torch writes about 20 per tensor, so this allows state
/// dicts of 50 000 tensors while an object-spraying pickle holds at most about 100 MiB.
const MAX_OBJECTS: usize = 1 << 20;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Longest GLOBAL line (module or name).
const MAX_LINE: usize = 1024;

/// The only callables a pickle may name.
#[derive(Clone, Copy, Debug)]
enum Global {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    StorageClass(DType),
}

/// A storage as returned by a persistent load.
#[derive(Clone)]
struct StorageRef {
    key: String,
    dtype: DType,
    storage: Arc<Storage>,
}

enum Obj {
    None,
    Bool,
    Int(i64),
    /// An integer outside i64; only an error if used as a number.
    BigInt,
    Float,
    Str(String),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRecord),
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool => "bool",
            Obj::Int(_) | Obj::BigInt => "int",
            Obj::Float => "float",
            Obj::Str(_) => "str",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "global",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }
}

fn err(msg: impl Into<String>) -> FormatError {
    FormatError::new(ErrorKind::Format, msg)
}

/// Runs the pickle in `data` and converts its result into a tensor or a dict of tensors;
/// `load(key, dtype, numel)` supplies the storage a persistent id names.
pub(crate) fn unpickle<F>(data: &[u8], load: F) -> Result<PtValue, FormatError>
where
    F: FnMut(&str, DType, u64) -> Result<Arc<Storage>, FormatError>,
{
    let mut m = Machine {
        data,
        pos: 0,
        objs: Vec::new(),
        depth: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        load,
    };
    let top = m.run()?;
    m.into_value(top)
}

struct Machine<'d, F> {
    data: &'d [u8],
    pos: usize,
    objs: Vec<Obj>,
    /// Nesting depth of each object (1 for scalars).
    depth: Vec<u16>,
    stack: Vec<usize>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
    load: F,
}

impl<F> Machine<'_, F>
where
    F: FnMut(&str, DType, u64) -> Result<Arc<Storage>, FormatError>,
{
    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                err(format!(
                    "data.pkl is truncated: {n} bytes wanted at byte {} of {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn len_u64(&mut self) -> Result<usize, FormatError> {
        let n = u64::from_le_bytes(self.take_array()?);
        usize::try_from(n).map_err(|_| err(format!("data.pkl length field {n} is too large")))
    }

    fn line(&mut self) -> Result<String, FormatError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(MAX_LINE + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| err("data.pkl: GLOBAL line is unterminated or too long"))?;
        let line = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(line)
    }

    fn push_obj(&mut self, obj: Obj, depth: u16) -> Result<(), FormatError> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(err(format!(
                "data.pkl creates more than {MAX_OBJECTS} objects"
            )));
        }
        if depth > MAX_DEPTH {
            return Err(err(format!(
                "data.pkl nests deeper than {MAX_DEPTH} levels"
            )));
        }
        self.objs.push(obj);
        self.depth.push(depth);
        self.stack.push(self.objs.len() - 1);
        Ok(())
    }

    fn push_container(&mut self, obj: Obj, items: &[usize]) -> Result<(), FormatError> {
        let depth = items.iter().map(|&i| self.depth[i]).max().unwrap_or(0) + 1;
        self.push_obj(obj, depth)
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<usize, FormatError> {
        if self.stack.len() <= self.floor() {
            return Err(err(format!(
                "data.pkl: stack underflow at byte {}",
                self.pos
            )));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self) -> Result<usize, FormatError> {
        if self.stack.len() <= self.floor() {
            return Err(err(format!(
                "data.pkl: stack underflow at byte {}",
                self.pos
            )));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<usize>, FormatError> {
        if self.stack.len() < self.floor() + n {
            return Err(err(format!(
                "data.pkl: stack underflow at byte {}",
                self.pos
            )));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<usize>, FormatError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| err(format!("data.pkl: no MARK before byte {}", self.pos)))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), FormatError> {
        let top = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(err(format!(
                "data.pkl memoizes more than {MAX_MEMO} objects"
            )));
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), FormatError> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| err(format!("data.pkl: memo entry {key} is missing")))?;
        self.push_again(id)
    }

    /// Pushes an existing object (BINGET, DUP) without creating one.
    fn push_again(&mut self, id: usize) -> Result<(), FormatError> {
        if self.stack.len() >= MAX_OBJECTS {
            return Err(err(format!("data.pkl stack exceeds {MAX_OBJECTS} entries")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn str_of(&self, id: usize) -> Option<&str> {
        match &self.objs[id] {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    fn push_str(&mut self, n: usize) -> Result<(), FormatError> {
        let at = self.pos;
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| err(format!("data.pkl: invalid UTF-8 string at byte {at}")))?
            .to_string();
        self.push_obj(Obj::Str(s), 1)
    }

    /// Appends `items` to the list or dict (`pairs`) at `target`, tracking its depth.
    fn extend(&mut self, target: usize, items: Vec<usize>, pairs: bool) -> Result<(), FormatError> {
        let child = items.iter().map(|&i| self.depth[i]).max().unwrap_or(0);
        let depth = self.depth[target].max(child.saturating_add(1));
        if depth > MAX_DEPTH {
            return Err(err(format!(
                "data.pkl nests deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth[target] = depth;
        match (&mut self.objs[target], pairs) {
            (Obj::List(list), false) => list.extend(items),
            (Obj::Dict(dict), true) => {
                if !items.len().is_multiple_of(2) {
                    return Err(err("data.pkl: SETITEMS with an odd number of items"));
                }
                dict.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
            }
            (other, _) => {
                return Err(err(format!(
                    "data.pkl: cannot add items to a {}",
                    other.kind()
                )))
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<usize, FormatError> {
        loop {
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| err("data.pkl ends without a STOP opcode"))?;
            match op {
                0x80 => {
                    // PROTO
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(FormatError::new(
                            ErrorKind::Unsupported,
                            format!("data.pkl uses pickle protocol {proto}"),
                        ));
                    }
                }
                0x95 => {
                    // FRAME: framing is only a read-ahead hint.
                    self.take(8)?;
                }
                b'c' => {
                    // GLOBAL
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(&module, &name)?;
                    self.push_obj(Obj::Global(g), 1)?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name))
                    else {
                        return Err(err("data.pkl: STACK_GLOBAL needs two strings"));
                    };
                    let g = resolve_global(module, name)?;
                    self.push_obj(Obj::Global(g), 1)?;
                }
                b'q' => {
                    let key = self.u8()?;
                    self.memo_put(key.into())?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    // MEMOIZE
                    let key =
                        u32::try_from(self.memo.len()).map_err(|_| err("data.pkl memo is full"))?;
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.u8()?;
                    self.memo_get(key.into())?;
                }
                b'j' => {
                    let key = self.u32()?;
                    self.memo_get(key)?;
                }
                b'(' => {
                    if self.marks.len() >= usize::from(MAX_DEPTH) {
                        return Err(err(format!("data.pkl nests deeper than {MAX_DEPTH} MARKs")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    // POP
                    self.pop()?;
                }
                b'1' => {
                    // POP_MARK
                    self.pop_mark()?;
                }
                b'2' => {
                    // DUP
                    let top = self.top()?;
                    self.push_again(top)?;
                }
                b')' => self.push_obj(Obj::Tuple(Vec::new()), 1)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_container(Obj::Tuple(items.clone()), &items)?;
                }
                0x85..=0x87 => {
                    // TUPLE1, TUPLE2, TUPLE3
                    let items = self.pop_n(usize::from(op - 0x84))?;
                    self.push_container(Obj::Tuple(items.clone()), &items)?;
                }
                b']' => self.push_obj(Obj::List(Vec::new()), 1)?,
                b'l' => {
                    // LIST
                    let items = self.pop_mark()?;
                    self.push_container(Obj::List(items.clone()), &items)?;
                }
                b'}' => self.push_obj(Obj::Dict(Vec::new()), 1)?,
                b'd' => {
                    // DICT
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Dict(Vec::new()), 1)?;
                    let dict = self.top()?;
                    self.extend(dict, items, true)?;
                }
                b'a' => {
                    // APPEND
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend(list, vec![item], false)?;
                }
                b'e' => {
                    // APPENDS
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend(list, items, false)?;
                }
                b's' => {
                    // SETITEM
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.extend(dict, vec![key, value], true)?;
                }
                b'u' => {
                    // SETITEMS
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.extend(dict, items, true)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    self.push_str(n)?;
                }
                0x8c => {
                    let n = self.u8()?.into();
                    self.push_str(n)?;
                }
                0x8d => {
                    let n = self.len_u64()?;
                    self.push_str(n)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push_obj(Obj::Int(v.into()), 1)?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_obj(Obj::Int(v.into()), 1)?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push_obj(Obj::Int(v.into()), 1)?;
                }
                0x8a | 0x8b => {
                    // LONG1, LONG4: little-endian two's complement of n bytes.
                    let n = if op == 0x8a {
                        usize::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.take_array()?);
                        usize::try_from(n).map_err(|_| err("data.pkl: negative LONG4 length"))?
                    };
                    let bytes = self.take(n)?;
                    let obj = long_value(bytes).map_or(Obj::BigInt, Obj::Int);
                    self.push_obj(obj, 1)?;
                }
                b'N' => self.push_obj(Obj::None, 1)?,
                0x88 | 0x89 => self.push_obj(Obj::Bool, 1)?,
                b'G' => {
                    self.take(8)?;
                    self.push_obj(Obj::Float, 1)?;
                }
                b'R' => {
                    // REDUCE
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let (obj, depth) = self.call(callable, args)?;
                    self.push_obj(obj, depth)?;
                }
                b'b' => {
                    // BUILD: only dicts (OrderedDict attributes such as `_metadata`) take state,
                    // and the state is dropped.
                    self.pop()?;
                    let target = self.top()?;
                    if !matches!(self.objs[target], Obj::Dict(_)) {
                        return Err(err(format!(
                            "data.pkl: BUILD on a {} is not supported",
                            self.objs[target].kind()
                        )));
                    }
                }
                b'Q' => {
                    // BINPERSID
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push_obj(Obj::Storage(storage), 1)?;
                }
                b'.' => return self.pop(),
                _ => {
                    return Err(err(format!(
                        "data.pkl: unsupported pickle opcode 0x{op:02x} at byte {at}"
                    )))
                }
            }
        }
    }

    fn int_of(&self, id: usize, what: &str) -> Result<i64, FormatError> {
        match &self.objs[id] {
            Obj::Int(v) => Ok(*v),
            Obj::BigInt => Err(FormatError::new(
                ErrorKind::Shape,
                format!("{what} does not fit in 64 bits"),
            )),
            other => Err(err(format!(
                "{what} is a {}, expected an int",
                other.kind()
            ))),
        }
    }

    fn ints_of(&self, id: usize, what: &str) -> Result<Vec<i64>, FormatError> {
        match &self.objs[id] {
            Obj::Tuple(items) | Obj::List(items) => {
                if items.len() > super::MAX_DIMS {
                    return Err(FormatError::new(
                        ErrorKind::Shape,
                        format!("{what} has {} dimensions", items.len()),
                    ));
                }
                items.iter().map(|&i| self.int_of(i, what)).collect()
            }
            other => Err(err(format!(
                "{what} is a {}, expected a tuple",
                other.kind()
            ))),
        }
    }

    fn args_of(&self, id: usize, name: &str) -> Result<&[usize], FormatError> {
        match &self.objs[id] {
            Obj::Tuple(items) => Ok(items),
            other => Err(err(format!(
                "data.pkl: arguments of {name} are a {}, expected a tuple",
                other.kind()
            ))),
        }
    }

    /// REDUCE: the allowed globals only build data.
    fn call(&mut self, callable: usize, args: usize) -> Result<(Obj, u16), FormatError> {
        let Obj::Global(g) = self.objs[callable] else {
            return Err(err(format!(
                "data.pkl: REDUCE calls a {}, expected a global",
                self.objs[callable].kind()
            )));
        };
        let depth = self.depth[args].saturating_add(1);
        match g {
            Global::OrderedDict => {
                let a = self.args_of(args, "collections.OrderedDict")?;
                if !a.is_empty() {
                    return Err(err(
                        "data.pkl: collections.OrderedDict called with arguments",
                    ));
                }
                Ok((Obj::Dict(Vec::new()), 1))
            }
            Global::RebuildTensorV2 => {
                let name = "torch._utils._rebuild_tensor_v2";
                let a = self.args_of(args, name)?;
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if a.len() != 6 && a.len() != 7 {
                    return Err(err(format!(
                        "data.pkl: {name} takes 6 or 7 arguments, got {}",
                        a.len()
                    )));
                }
                let Obj::Storage(s) = &self.objs[a[0]] else {
                    return Err(err(format!(
                        "data.pkl: first argument of {name} is a {}, expected a storage",
                        self.objs[a[0]].kind()
                    )));
                };
                let offset = self.int_of(a[1], "storage offset")?;
                let shape = self.ints_of(a[2], "size")?;
                let strides = self.ints_of(a[3], "stride")?;
                let t = build_tensor(s.dtype, s.storage.clone(), &s.key, offset, shape, strides)?;
                Ok((Obj::Tensor(t), depth))
            }
            Global::RebuildParameter => {
                let name = "torch._utils._rebuild_parameter";
                let a = self.args_of(args, name)?;
                // (data, requires_grad, backward_hooks)
                match a.first().map(|&i| &self.objs[i]) {
                    Some(Obj::Tensor(t)) if a.len() == 3 => Ok((Obj::Tensor(t.clone()), depth)),
                    _ => Err(err(format!(
                        "data.pkl: {name} expects (tensor, requires_grad, hooks)"
                    ))),
                }
            }
            Global::StorageClass(d) => Err(err(format!(
                "data.pkl: storage class of {} cannot be called",
                d.name()
            ))),
        }
    }

    /// BINPERSID with `('storage', torch.XStorage, key, location, numel)`.
    fn persistent_load(&mut self, pid: usize) -> Result<StorageRef, FormatError> {
        let bad = || err("data.pkl: persistent id is not ('storage', class, key, location, numel)");
        let Obj::Tuple(items) = &self.objs[pid] else {
            return Err(bad());
        };
        let [tag, class, key, _location, numel] = items[..] else {
            return Err(bad());
        };
        if self.str_of(tag) != Some("storage") {
            return Err(bad());
        }
        let Obj::Global(Global::StorageClass(dtype)) = self.objs[class] else {
            return Err(err(format!(
                "data.pkl: persistent id names a {} where a storage class belongs",
                self.objs[class].kind()
            )));
        };
        let key = self.str_of(key).ok_or_else(bad)?.to_string();
        let numel = self.int_of(numel, "storage element count")?;
        let numel = u64::try_from(numel).map_err(|_| {
            FormatError::new(
                ErrorKind::Shape,
                format!("storage '{key}' has negative element count {numel}"),
            )
        })?;
        let storage = (self.load)(&key, dtype, numel)?;
        Ok(StorageRef {
            key,
            dtype,
            storage,
        })
    }

    /// Converts the pickle's result into a tensor or a dict of str -> tensor.
    fn into_value(self, top: usize) -> Result<PtValue, FormatError> {
        match &self.objs[top] {
            Obj::Tensor(t) => Ok(PtValue::Tensor(t.clone())),
            Obj::Dict(entries) => {
                // Python dict semantics: a repeated key keeps its first place, last value.
                let mut out: Vec<(String, TensorRecord)> = Vec::with_capacity(entries.len());
                let mut seen: HashMap<&str, usize> = HashMap::new();
                for &(k, v) in entries {
                    let key = self.str_of(k).ok_or_else(|| {
                        err(format!(
                            "dict key is a {}, expected a str",
                            self.objs[k].kind()
                        ))
                    })?;
                    let Obj::Tensor(t) = &self.objs[v] else {
                        return Err(err(format!(
                            "dict value for key '{key}' is a {}, expected a tensor",
                            self.objs[v].kind()
                        )));
                    };
                    match seen.get(key) {
                        Some(&i) => out[i].1 = t.clone(),
                        None => {
                            seen.insert(key, out.len());
                            out.push((key.to_string(), t.clone()));
                        }
                    }
                }
                Ok(PtValue::Dict(out))
            }
            other => Err(err(format!(
                "top-level object is a {}, expected a tensor or a dict of tensors",
                other.kind()
            ))),
        }
    }
}

/// Value of a LONG1/LONG4 payload, or None when it does not fit in an i64.
fn long_value(bytes: &[u8]) -> Option<i64> {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    if bytes.len() > 8 {
        // Longer encodings fit only if the extra bytes are sign extension.
        if bytes[8..].iter().any(|&b| b != fill) || ((bytes[7] & 0x80 != 0) != negative) {
            return None;
        }
    }
    let mut le = [fill; 8];
    let n = bytes.len().min(8);
    le[..n].copy_from_slice(&bytes[..n]);
    Some(i64::from_le_bytes(le))
}

/// Maps `module.name` onto an allowed global; anything else is refused before it is used.
fn resolve_global(module: &str, name: &str) -> Result<Global, FormatError> {
    let g = match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch", class) => DType::from_storage_class(class).map(Global::StorageClass),
        _ => None,
    };
    g.ok_or_else(|| {
        let shown: String = format!("{module}.{name}").chars().take(200).collect();
        FormatError::new(
            ErrorKind::Forbidden,
            format!(
                "data.pkl names the forbidden global '{shown}' (only torch tensor-rebuilding globals are allowed; nothing was executed)"
            ),
        )
    })
}
