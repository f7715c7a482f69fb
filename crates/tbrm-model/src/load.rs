//! Reading and writing Hugging Face safetensors checkpoints: `model.safetensors` or shards
//! listed in `model.safetensors.index.json`. Everything is validated here (header, sizes,
//! dtype, shape, completeness) before a byte reaches tch, whose own loaders panic or report
//! opaque errors on bad files.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

use crate::ModelError;

pub(crate) const SINGLE_FILE: &str = "model.safetensors";
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// The weight files of a checkpoint folder and the tensor names they hold.
pub(crate) struct WeightFiles {
    pub files: Vec<PathBuf>,
    pub names: BTreeSet<String>,
}

impl WeightFiles {
    /// Finds `model.safetensors` (preferred, as transformers does) or the shard index in `dir`
    /// and lists tensor names from the header or index, without reading tensor data.
    pub fn find(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            let names = header(&single)?.into_keys().collect();
            return Ok(WeightFiles {
                files: vec![single],
                names,
            });
        }
        if !index.is_file() {
            return Err(ModelError::checkpoint(
                dir,
                format!("no {SINGLE_FILE} or {INDEX_FILE} in this folder"),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: index.clone(),
            source,
        })?;
        let mut files = BTreeSet::new();
        for shard in parsed.weight_map.values() {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(ModelError::checkpoint(
                    &index,
                    format!("weight_map names shard {shard:?}, which does not exist"),
                ));
            }
            files.insert(path);
        }
        Ok(WeightFiles {
            files: files.into_iter().collect(),
            names: parsed.weight_map.into_keys().collect(),
        })
    }
}

/// Reads the 8-byte length and the JSON header of a safetensors file, checking the header
/// fits in the file. Returns (header length, file length, entries without `__metadata__`).
fn read_header_json(
    f: &mut std::fs::File,
    path: &Path,
) -> Result<(u64, u64, BTreeMap<String, serde_json::Value>), ModelError> {
    let file_len = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    f.read_exact(&mut len_bytes).map_err(|_| {
        ModelError::checkpoint(
            path,
            "too short to be a safetensors file (no 8-byte header length)",
        )
    })?;
    let n = u64::from_le_bytes(len_bytes);
    if n.saturating_add(8) > file_len || n > 100_000_000 {
        return Err(ModelError::checkpoint(
            path,
            format!("header length {n} exceeds the file size {file_len} (truncated file?)"),
        ));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)
        .map_err(|e| ModelError::io(path, e))?;
    let mut raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&buf)
        .map_err(|e| ModelError::checkpoint(path, format!("unreadable safetensors header: {e}")))?;
    raw.remove("__metadata__");
    Ok((n, file_len, raw))
}

/// Tensor name -> shape from a safetensors header, checking the declared data fits the file.
fn header(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let (n, file_len, raw) = read_header_json(&mut f, path)?;
    #[derive(serde::Deserialize)]
    struct Info {
        shape: Vec<usize>,
        data_offsets: (u64, u64),
    }
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        let info: Info = serde_json::from_value(v).map_err(|e| {
            ModelError::checkpoint(path, format!("bad header entry for tensor `{name}`: {e}"))
        })?;
        if info.data_offsets.1 + 8 + n > file_len {
            return Err(ModelError::checkpoint(
                path,
                format!(
                    "tensor `{name}` ends at byte {} but the file has {file_len} (truncated file?)",
                    info.data_offsets.1 + 8 + n
                ),
            ));
        }
        out.insert(name, info.shape);
    }
    Ok(out)
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        _ => None,
    }
}

/// Copies every tensor of `files` into the variable of the same name (converting dtype and
/// device). Names in `ignore` may be present and are skipped; any other unknown name is
/// reported with a warning, as transformers does; a missing variable is an error.
pub(crate) fn load_into(
    vars: &HashMap<String, Tensor>,
    files: &[PathBuf],
    ignore: impl Fn(&str) -> bool,
) -> Result<(), ModelError> {
    let mut loaded = BTreeSet::new();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| ModelError::io(file, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            ModelError::checkpoint(
                file,
                format!("not a valid safetensors file (truncated or corrupt?): {e:?}"),
            )
        })?;
        for (name, view) in st.tensors() {
            let Some(var) = vars.get(&name) else {
                if !ignore(&name) {
                    tracing::warn!("{}: unused tensor `{name}`", file.display());
                }
                continue;
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(ModelError::checkpoint(
                    file,
                    format!(
                        "tensor `{name}` has shape {shape:?}, config.json implies {:?}",
                        var.size()
                    ),
                ));
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| {
                ModelError::checkpoint(
                    file,
                    format!(
                        "tensor `{name}` has dtype {:?}; supported: F32, F16, BF16",
                        view.dtype()
                    ),
                )
            })?;
            let src = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            let mut dst = var.shallow_clone();
            tch::no_grad(|| dst.f_copy_(&src))?;
            loaded.insert(name);
        }
    }
    let missing: Vec<&String> = vars.keys().filter(|k| !loaded.contains(*k)).collect();
    if let Some(first) = missing.iter().min() {
        let where_ = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ModelError::checkpoint(
            files.first().cloned().unwrap_or_default(),
            format!(
                "missing tensor `{first}` ({} missing in all; looked in {where_})",
                missing.len()
            ),
        ));
    }
    Ok(())
}

/// Writes `tensors` to `path` as one safetensors file with transformers' `{"format": "pt"}`
/// metadata. Written to a temporary name first and renamed, so a crash never leaves a
/// half-written checkpoint under the real name.
///
/// Tensors may live on any device and need not be contiguous: each one is copied to host
/// memory only while it is being written (safetensors asks for the bytes of one tensor at a
/// time, in file order), so the extra memory is bounded by the largest tensor, not the sum.
/// Supported kinds: the float kinds, the integer kinds and bool.
pub fn save_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<(), ModelError> {
    let failed: RefCell<Option<String>> = RefCell::new(None);
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let kind = t.f_kind()?;
        let dtype = Dtype::try_from(kind).map_err(|_| {
            ModelError::checkpoint(
                path,
                format!("cannot save tensor `{name}` of kind {kind:?}"),
            )
        })?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let numel = t.numel();
        views.push((
            name.as_str(),
            LazyView {
                tensor: t.shallow_clone(),
                name,
                dtype,
                shape,
                numel,
                len: numel * kind.elt_size_in_bytes(),
                failed: &failed,
            },
        ));
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let tmp = path.with_extension("safetensors.tmp");
    let written = safetensors::tensor::serialize_to_file(views, &metadata, &tmp)
        .map_err(|e| ModelError::checkpoint(&tmp, format!("write failed: {e:?}")));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(msg) = failed.into_inner() {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::checkpoint(path, msg));
    }
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

/// [`save_tensors`] under its crate-internal name.
pub(crate) fn save_file(tensors: &[(String, Tensor)], path: &Path) -> Result<(), ModelError> {
    save_tensors(tensors, path)
}

/// A tensor handed to safetensors' serializer: its bytes are produced (copied to host memory)
/// only when the serializer asks for them, right before writing them.
struct LazyView<'a> {
    tensor: Tensor,
    name: &'a str,
    dtype: Dtype,
    shape: Vec<usize>,
    numel: usize,
    len: usize,
    /// The first copy error; `data()` cannot return one, so it is reported after writing.
    failed: &'a RefCell<Option<String>>,
}

impl View for LazyView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let mut buf = vec![0u8; self.len];
        if self.failed.borrow().is_none() {
            if let Err(e) = self.tensor.f_copy_data_u8(&mut buf, self.numel) {
                *self.failed.borrow_mut() = Some(format!(
                    "copying tensor `{}` to host memory failed: {e}",
                    self.name
                ));
            }
        }
        Cow::Owned(buf)
    }

    fn data_len(&self) -> usize {
        self.len
    }
}

/// One tensor of a safetensors file, as its header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub kind: Kind,
    pub shape: Vec<i64>,
    /// Absolute byte offset of the data in the file.
    offset: u64,
    /// Data length in bytes (`numel * element size`, checked).
    len: u64,
}

/// A safetensors file opened for reading one tensor at a time (the whole file is never held
/// in memory). `open` parses and checks the header: every tensor's dtype is supported, its
/// byte length matches dtype and shape, and its bytes lie inside the file, so a truncated file
/// is reported at `open` and `read` only fails on I/O errors.
pub struct SafetensorsReader {
    path: PathBuf,
    file: std::fs::File,
    entries: BTreeMap<String, TensorEntry>,
}

impl SafetensorsReader {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let (n, file_len, raw) = read_header_json(&mut file, path)?;
        #[derive(serde::Deserialize)]
        struct Info {
            dtype: Dtype,
            shape: Vec<usize>,
            data_offsets: (u64, u64),
        }
        let mut entries = BTreeMap::new();
        for (name, v) in raw {
            let bad = |msg: String| ModelError::checkpoint(path, format!("tensor `{name}`: {msg}"));
            let info: Info = serde_json::from_value(v).map_err(|e| {
                ModelError::checkpoint(path, format!("bad header entry for tensor `{name}`: {e}"))
            })?;
            let kind = Kind::try_from(info.dtype)
                .map_err(|_| bad(format!("unsupported dtype {:?}", info.dtype)))?;
            let (begin, end) = info.data_offsets;
            let numel = info
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
            let expected = numel.and_then(|k| k.checked_mul(kind.elt_size_in_bytes() as u64));
            if end < begin || Some(end - begin) != expected {
                return Err(bad(format!(
                    "data_offsets {begin}..{end} do not hold a {:?} tensor of shape {:?}",
                    info.dtype, info.shape
                )));
            }
            let data_start = 8 + n;
            if end.saturating_add(data_start) > file_len {
                return Err(bad(format!(
                    "ends at byte {} but the file has {file_len} (truncated file?)",
                    end.saturating_add(data_start)
                )));
            }
            entries.insert(
                name,
                TensorEntry {
                    kind,
                    shape: info.shape.iter().map(|&d| d as i64).collect(),
                    offset: data_start + begin,
                    len: end - begin,
                },
            );
        }
        Ok(SafetensorsReader {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor of the file, by name.
    pub fn entries(&self) -> &BTreeMap<String, TensorEntry> {
        &self.entries
    }

    /// Tensor names in the order their data lies in the file (reading in this order is
    /// sequential I/O).
    pub fn names_in_file_order(&self) -> Vec<String> {
        let mut names: Vec<(&String, u64)> =
            self.entries.iter().map(|(k, e)| (k, e.offset)).collect();
        names.sort_by_key(|&(_, offset)| offset);
        names.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// Reads tensor `name` into a new CPU tensor of the file's dtype and shape.
    pub fn read(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let entry = self.entries.get(name).ok_or_else(|| {
            ModelError::checkpoint(&self.path, format!("no tensor `{name}` in this file"))
        })?;
        let t = Tensor::f_empty(entry.shape.as_slice(), (entry.kind, Device::Cpu))?;
        if entry.len > 0 {
            self.file
                .seek(SeekFrom::Start(entry.offset))
                .map_err(|e| ModelError::io(&self.path, e))?;
            // SAFETY: `t` is a freshly allocated, contiguous CPU tensor of `entry.kind` and
            // `entry.shape`, so its storage holds exactly `entry.len` bytes (checked at
            // `open`), and nothing else refers to it while it is filled.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, entry.len as usize)
            };
            self.file.read_exact(dst).map_err(|e| {
                ModelError::checkpoint(
                    &self.path,
                    format!("reading tensor `{name}` failed (file changed or truncated?): {e}"),
                )
            })?;
        }
        Ok(t)
    }
}

/// Calls `f` with every tensor of the safetensors file `path` (CPU tensors of the file's
/// dtype), one at a time in file order, so only one tensor is in memory at once. The header is
/// checked first (see [`SafetensorsReader::open`]).
pub fn read_tensors_streaming<E: From<ModelError>>(
    path: &Path,
    mut f: impl FnMut(&str, Tensor) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = SafetensorsReader::open(path)?;
    for name in reader.names_in_file_order() {
        let t = reader.read(&name)?;
        f(&name, t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// The writer as it was before tensors were copied lazily: every tensor to host memory
    /// first, then one `serialize` call.
    fn old_whole_copy_bytes(tensors: &[(String, Tensor)]) -> Vec<u8> {
        let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, t)| {
                let t = t.to_device(Device::Cpu).contiguous();
                let numel = t.numel();
                let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
                t.copy_data_u8(&mut data, numel);
                let shape = t.size().iter().map(|&d| d as usize).collect();
                (
                    name.clone(),
                    Dtype::try_from(t.kind()).unwrap(),
                    shape,
                    data,
                )
            })
            .collect();
        let views: Vec<(&str, TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        safetensors::tensor::serialize(views, &metadata).unwrap()
    }

    fn sample() -> Vec<(String, Tensor)> {
        tch::manual_seed(7);
        let f = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
        vec![
            ("b.weight".into(), f.shallow_clone()),
            // Non-contiguous: written as its contiguous copy.
            ("a.transposed".into(), f.tr()),
            (
                "c.bf16".into(),
                Tensor::randn([7], (Kind::BFloat16, Device::Cpu)),
            ),
            (
                "d.half".into(),
                Tensor::randn([2, 2], (Kind::Half, Device::Cpu)),
            ),
            ("step".into(), Tensor::from_slice(&[42i64])),
            (
                "empty".into(),
                Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
            ),
        ]
    }

    #[test]
    fn save_tensors_writes_the_same_bytes_as_the_whole_copy_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let tensors = sample();
        save_tensors(&tensors, &path).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written, old_whole_copy_bytes(&tensors));
        assert!(!path.with_extension("safetensors.tmp").exists());
        // And tch's reader (the format of older optimizer files) reads back the same values.
        let back: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .unwrap()
            .into_iter()
            .collect();
        for (name, t) in &tensors {
            assert!(back[name].equal(&t.contiguous()), "{name}");
        }
    }

    #[test]
    fn streaming_reader_round_trips_bit_exactly_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let tensors = sample();
        save_tensors(&tensors, &path).unwrap();
        let mut reader = SafetensorsReader::open(&path).unwrap();
        assert_eq!(reader.entries().len(), tensors.len());
        for (name, t) in &tensors {
            let entry = &reader.entries()[name];
            assert_eq!((entry.kind, &entry.shape), (t.kind(), &t.size()), "{name}");
            let got = reader.read(name).unwrap();
            assert_eq!(got.kind(), t.kind(), "{name}");
            assert!(got.equal(&t.contiguous()), "{name}");
        }
        let mut seen = Vec::new();
        let mut last_offset = 0;
        read_tensors_streaming(&path, |name, t| -> Result<(), ModelError> {
            let entry = &reader.entries()[name];
            assert!(entry.offset >= last_offset, "not in file order at `{name}`");
            last_offset = entry.offset;
            assert!(t.equal(&reader.read(name)?), "{name}");
            seen.push(name.to_string());
            Ok(())
        })
        .unwrap();
        seen.sort();
        let mut want: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        want.sort();
        assert_eq!(seen, want);
        let err = reader.read("nope").unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("x.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn truncated_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trunc.safetensors");
        save_tensors(&sample(), &path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        for keep in [len - 1, len / 2, 20, 4, 0] {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(keep).unwrap();
            let err = match SafetensorsReader::open(&path) {
                Ok(_) => panic!("a file cut to {keep} bytes opened"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("trunc.safetensors"), "{keep}: {err}");
        }
    }

    #[test]
    fn save_tensors_rejects_unsupported_kinds_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let t = Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu));
        let err = save_tensors(&[("z.weight".into(), t)], &path).unwrap_err();
        assert!(err.to_string().contains("z.weight"), "{err}");
        assert!(!path.exists());
    }
}
