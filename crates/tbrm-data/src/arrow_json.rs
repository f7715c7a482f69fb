//! One parquet row as a JSON object, so parquet and JSONL rows go through the same field mapping
//! and validation. Only the Arrow types that dataset files use are mapped structurally (numbers,
//! booleans, strings, lists, structs, dictionaries); other types are rendered through Arrow's
//! own cast to text, and a type that cannot be cast is a row error naming the column.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{
    DataType, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use serde_json::{Map, Number, Value};

/// Row `row` of `batch` as `{column: value}`.
pub(crate) fn batch_row_to_json(batch: &RecordBatch, row: usize) -> Result<Value, String> {
    let schema = batch.schema();
    let mut obj = Map::with_capacity(batch.num_columns());
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        let v = cell(col.as_ref(), row).map_err(|e| format!("column `{}`: {e}", field.name()))?;
        obj.insert(field.name().clone(), v);
    }
    Ok(Value::Object(obj))
}

fn float(x: f64) -> Value {
    // JSON has no NaN/inf; a non-finite value reads as null, which the row parser then reports
    // where a value is required.
    Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn cell(a: &dyn Array, i: usize) -> Result<Value, String> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float16 => float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).into(),
        DataType::Utf8View => a.as_string_view().value(i).into(),
        DataType::List(_) => list(a.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i).as_ref())?,
        DataType::FixedSizeList(_, _) => list(a.as_fixed_size_list().value(i).as_ref())?,
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut obj = Map::with_capacity(fields.len());
            for (f, col) in fields.iter().zip(s.columns()) {
                let v = cell(col.as_ref(), i).map_err(|e| format!("{}: {e}", f.name()))?;
                obj.insert(f.name().clone(), v);
            }
            Value::Object(obj)
        }
        DataType::Dictionary(_, value_type) => {
            let plain = cast(a.slice(i, 1).as_ref(), value_type).map_err(|e| e.to_string())?;
            cell(plain.as_ref(), 0)?
        }
        other if can_cast_types(other, &DataType::Utf8) => {
            let text = cast(a.slice(i, 1).as_ref(), &DataType::Utf8).map_err(|e| e.to_string())?;
            cell(text.as_ref(), 0)?
        }
        other => return Err(format!("unsupported type {other}")),
    })
}

fn list(values: &dyn Array) -> Result<Value, String> {
    (0..values.len())
        .map(|j| cell(values, j))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}
