//! Reading and writing Hugging Face safetensors checkpoints: `model.safetensors` or shards
//! listed in `model.safetensors.index.json`. Everything is validated here (header, sizes,
//! dtype, shape, completeness) before a byte reaches tch, whose own loaders panic or report
//! opaque errors on bad files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
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

/// Tensor name -> shape from a safetensors header, checking the declared data fits the file.
fn header(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
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
    #[derive(serde::Deserialize)]
    struct Info {
        shape: Vec<usize>,
        data_offsets: (u64, u64),
    }
    let mut raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&buf)
        .map_err(|e| ModelError::checkpoint(path, format!("unreadable safetensors header: {e}")))?;
    raw.remove("__metadata__");
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
pub(crate) fn save_file(tensors: &[(String, Tensor)], path: &Path) -> Result<(), ModelError> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(Device::Cpu).contiguous();
        let dtype = match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            k => {
                return Err(ModelError::checkpoint(
                    path,
                    format!("cannot save tensor `{name}` of kind {k:?}"),
                ))
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, data));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, dtype, shape, data) in &owned {
        let view = TensorView::new(*dtype, shape.clone(), data)
            .map_err(|e| ModelError::checkpoint(path, format!("tensor `{name}`: {e:?}")))?;
        views.push((name.as_str(), view));
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::tensor::serialize_to_file(views, &metadata, &tmp)
        .map_err(|e| ModelError::checkpoint(&tmp, format!("write failed: {e:?}")))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}
