//! A safety scan of a PyTorch checkpoint's pickle before it is parsed: bounded nesting and size,
//! lengths checked against the file, callables restricted to the tensor-rebuild allow-list.
//!
//! candle's pickle reader (which builds the tensors afterwards) executes nothing, but it recurses
//! on nested objects (a 400 KB pickle of nested lists overflows the stack), clones memoised
//! objects (a few memo references per level make the object grow exponentially), allocates a
//! string's stated length before reading it (4 GB for a forged length), and silently drops an
//! entry whose value is a call of an arbitrary function (`posix.system`, say). This scan walks the
//! opcodes once, simulating the depth and size of every stack item, and refuses such a file with
//! the reason, so a user hears about a hostile or broken checkpoint instead of getting a crash or
//! a quietly partial model.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Nesting deeper than this is refused (a state dict nests a handful of levels).
pub const MAX_DEPTH: u32 = 100;
/// Objects (items of all containers together) one stack item may stand for.
pub const MAX_OBJECTS: u64 = 10_000_000;
/// Largest `data.pkl` read (the pickle of a state dict is kilobytes; the tensors are separate).
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Whether `module.name` may be referenced: the classes and functions `torch.save` of a state
/// dict uses.
fn allowed(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_tensor_v2")
            | ("torch._utils", "_rebuild_parameter")
            | ("torch._tensor", "_rebuild_from_type_v2")
            | ("torch.nn.parameter", "Parameter")
            | ("torch", "Tensor")
    ) || (module == "torch" && name.ends_with("Storage"))
}

/// One simulated stack item: nesting depth and the objects it stands for.
#[derive(Debug, Clone, Copy, Default)]
struct Item {
    depth: u32,
    objects: u64,
}

impl Item {
    const SCALAR: Item = Item {
        depth: 0,
        objects: 1,
    };

    /// A container of `children`.
    fn of(children: &[Item]) -> Item {
        Item {
            depth: children.iter().map(|c| c.depth).max().unwrap_or(0) + 1,
            objects: 1 + children.iter().map(|c| c.objects).sum::<u64>(),
        }
    }

    /// This container with `children` added.
    fn grow(self, children: &[Item]) -> Item {
        let more = Item::of(children);
        Item {
            depth: self.depth.max(more.depth),
            objects: self.objects + more.objects - 1,
        }
    }
}

/// Scan every `*data.pkl` of the checkpoint zip at `path`.
pub fn scan_checkpoint(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::msg(format!("{}: cannot open: {e}", path.display())))?;
    let mut zip = match zip_archive(file) {
        Ok(z) => z,
        // not a zip: candle's reader gives the error (and its hint)
        Err(_) => return Ok(()),
    };
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::msg(format!("{}: unreadable zip entry: {e}", path.display())))?;
        let name = entry
            .name()
            .map_err(|e| Error::msg(format!("{}: unreadable zip entry: {e}", path.display())))?
            .into_owned();
        if !name.ends_with("data.pkl") {
            continue;
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::msg(format!("{}: {name}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(Error::msg(format!(
                "{}: {name} is larger than {} MiB: not the pickle of a state dict",
                path.display(),
                MAX_PICKLE_BYTES >> 20
            )));
        }
        scan(&bytes).map_err(|why| {
            Error::msg(format!(
                "{}: refusing to load {name}: {why}; hint: only files written by \
                 torch.save(model.state_dict()) are read",
                path.display()
            ))
        })?;
    }
    Ok(())
}

fn zip_archive(file: std::fs::File) -> zip::result::ZipResult<zip::ZipArchive<std::fs::File>> {
    zip::ZipArchive::new(file)
}

/// Scan one pickle; the error says what is wrong (without the file name).
pub fn scan(p: &[u8]) -> std::result::Result<(), String> {
    let mut at = 0usize;
    let mut stack: Vec<Item> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: std::collections::HashMap<u32, Item> = std::collections::HashMap::new();
    let take = |at: &mut usize, n: usize| -> std::result::Result<&[u8], String> {
        if p.len() - *at < n {
            return Err(format!(
                "an operand of {n} bytes at offset {} runs past the end of the pickle",
                *at
            ));
        }
        *at += n;
        Ok(&p[*at - n..*at])
    };
    let pop = |stack: &mut Vec<Item>, at: usize| {
        stack
            .pop()
            .ok_or_else(|| format!("malformed pickle: stack underflow at offset {at}"))
    };
    let to_mark = |stack: &mut Vec<Item>, marks: &mut Vec<usize>, at: usize| {
        let m = marks
            .pop()
            .ok_or_else(|| format!("malformed pickle: no mark at offset {at}"))?;
        if m > stack.len() {
            return Err(format!("malformed pickle: stack underflow at offset {at}"));
        }
        Ok::<Vec<Item>, String>(stack.split_off(m))
    };
    loop {
        let op_at = at;
        let op = *take(&mut at, 1)?.first().expect("one byte");
        let pushed = match op {
            0x80 => {
                take(&mut at, 1)?;
                None
            }
            b'c' => {
                let mut line = || -> std::result::Result<String, String> {
                    let rest = &p[at..];
                    let n = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or_else(|| format!("unterminated GLOBAL at offset {op_at}"))?;
                    at += n + 1;
                    Ok(String::from_utf8_lossy(&rest[..n]).into_owned())
                };
                let (module, name) = (line()?, line()?);
                if !allowed(&module, &name) {
                    return Err(format!(
                        "it references `{module}.{name}`, which is not one of the tensor-rebuild \
                         functions a state dict uses"
                    ));
                }
                Some(Item::SCALAR)
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    take(&mut at, 1)?[0] as u32
                } else {
                    u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes"))
                };
                let top = *stack.last().ok_or_else(|| {
                    format!("malformed pickle: stack underflow at offset {op_at}")
                })?;
                memo.insert(id, top);
                None
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    take(&mut at, 1)?[0] as u32
                } else {
                    u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes"))
                };
                Some(
                    *memo
                        .get(&id)
                        .ok_or_else(|| format!("malformed pickle: memo {id} unset at {op_at}"))?,
                )
            }
            b'X' => {
                let n = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes"));
                take(&mut at, n as usize).map_err(|_| {
                    format!(
                        "a string of {n} bytes at offset {op_at} is longer than the rest of the \
                         pickle ({} bytes)",
                        p.len() - at
                    )
                })?;
                Some(Item::SCALAR)
            }
            b'J' => {
                take(&mut at, 4)?;
                Some(Item::SCALAR)
            }
            b'K' => {
                take(&mut at, 1)?;
                Some(Item::SCALAR)
            }
            b'M' => {
                take(&mut at, 2)?;
                Some(Item::SCALAR)
            }
            b'G' => {
                take(&mut at, 8)?;
                Some(Item::SCALAR)
            }
            0x8a => {
                let n = take(&mut at, 1)?[0] as usize;
                take(&mut at, n)?;
                Some(Item::SCALAR)
            }
            b'N' | 0x88 | 0x89 => Some(Item::SCALAR),
            b')' | b']' | b'}' => Some(Item::of(&[])),
            b'(' => {
                marks.push(stack.len());
                None
            }
            b't' | b'd' => Some(Item::of(&to_mark(&mut stack, &mut marks, op_at)?)),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(format!(
                        "malformed pickle: stack underflow at offset {op_at}"
                    ));
                }
                let items = stack.split_off(stack.len() - n);
                Some(Item::of(&items))
            }
            b'Q' => {
                pop(&mut stack, op_at)?;
                Some(Item::SCALAR)
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack, op_at)?;
                let callable = pop(&mut stack, op_at)?;
                Some(Item::of(&[callable, args]))
            }
            b'b' => {
                let args = pop(&mut stack, op_at)?;
                let obj = pop(&mut stack, op_at)?;
                Some(obj.grow(&[args]))
            }
            b'a' => {
                let v = pop(&mut stack, op_at)?;
                let list = pop(&mut stack, op_at)?;
                Some(list.grow(&[v]))
            }
            b's' => {
                let v = pop(&mut stack, op_at)?;
                let k = pop(&mut stack, op_at)?;
                let dict = pop(&mut stack, op_at)?;
                Some(dict.grow(&[k, v]))
            }
            b'e' | b'u' => {
                let items = to_mark(&mut stack, &mut marks, op_at)?;
                let container = pop(&mut stack, op_at)?;
                Some(container.grow(&items))
            }
            b'.' => return Ok(()),
            other => {
                return Err(format!(
                    "opcode 0x{other:02x} at offset {op_at} is not one a state dict uses"
                ))
            }
        };
        if let Some(item) = pushed {
            if item.depth > MAX_DEPTH {
                return Err(format!(
                    "objects nest deeper than {MAX_DEPTH} levels (offset {op_at})"
                ));
            }
            if item.objects > MAX_OBJECTS {
                return Err(format!(
                    "an object would expand to more than {MAX_OBJECTS} objects (offset {op_at})"
                ));
            }
            stack.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{ "a": 1 }` as protocol 2 writes it.
    fn dict_pickle(value: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'X', 1, 0, 0, 0, b'a'];
        p.extend_from_slice(value);
        p.extend_from_slice(b"s.");
        p
    }

    #[test]
    fn a_plain_state_dict_shape_passes() {
        assert_eq!(scan(&dict_pickle(&[b'K', 1])), Ok(()));
        let mut od = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01".to_vec();
        od.extend_from_slice(b"X\x01\x00\x00\x00kK\x01s.");
        assert_eq!(scan(&od), Ok(()));
    }

    #[test]
    fn a_foreign_callable_is_named() {
        // {"a": posix.system("echo")}
        let mut v = b"cposix\nsystem\nX\x04\x00\x00\x00echo".to_vec();
        v.extend_from_slice(&[0x85, b'R']);
        let e = scan(&dict_pickle(&v)).unwrap_err();
        assert!(e.contains("`posix.system`"), "{e}");
    }

    #[test]
    fn deep_nesting_and_memo_bombs_are_refused() {
        // 100,000 nested lists: ] ] ] ... a a a ...
        let n = 100_000;
        let mut v = vec![b']'; n];
        v.extend(std::iter::repeat_n(b'a', n - 1));
        let e = scan(&dict_pickle(&v)).unwrap_err();
        assert!(e.contains("nest deeper"), "{e}");
        // a list of 10 copies of the previous list, 20 times: 10^20 objects
        let mut v = vec![b']', b'K', 1, b'a', b'q', 0];
        for _ in 0..20 {
            v.extend_from_slice(b"](");
            v.extend(std::iter::repeat_n([b'h', 0], 10).flatten());
            v.extend_from_slice(&[b'e', b'q', 0]);
        }
        let e = scan(&dict_pickle(&v)).unwrap_err();
        assert!(e.contains("expand to more than"), "{e}");
    }

    /// The reference-format checkpoint of the CLI tests (written by torch.save).
    fn torch_checkpoint() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../hrm-cli/tests/fixtures/torch-ckpt/step_26040")
    }

    #[test]
    fn a_real_checkpoint_passes_and_a_hostile_one_in_the_same_zip_is_refused() {
        scan_checkpoint(&torch_checkpoint()).unwrap();
        // the same zip with its data.pkl replaced by {"a": posix.system("echo")}
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hostile.pt");
        let mut src = zip_archive(std::fs::File::open(torch_checkpoint()).unwrap()).unwrap();
        let mut w = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..src.len() {
            let mut e = src.by_index(i).unwrap();
            let name = e.name().unwrap().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            if name.ends_with("data.pkl") {
                let mut v = b"cposix\nsystem\nX\x04\x00\x00\x00echo".to_vec();
                v.extend_from_slice(&[0x85, b'R']);
                bytes = dict_pickle(&v);
            }
            w.start_file(name, opts).unwrap();
            std::io::Write::write_all(&mut w, &bytes).unwrap();
        }
        w.finish().unwrap();
        let e = scan_checkpoint(&out).unwrap_err().to_string();
        assert!(
            e.contains("hostile.pt") && e.contains("`posix.system`"),
            "{e}"
        );
        assert!(e.contains("hint:"), "{e}");
    }

    #[test]
    fn forged_lengths_and_truncation_are_refused() {
        let e = scan(&dict_pickle(&[b'X', 0xff, 0xff, 0xff, 0xff, b'x'])).unwrap_err();
        assert!(e.contains("longer than the rest"), "{e}");
        let e = scan(&[0x80, 2, b'}', b'X', 5, 0]).unwrap_err();
        assert!(e.contains("past the end"), "{e}");
        let e = scan(&[0x80, 2, b's', b'.']).unwrap_err();
        assert!(e.contains("underflow"), "{e}");
        let e = scan(&[0x80, 2, b'i']).unwrap_err();
        assert!(e.contains("opcode 0x69"), "{e}");
    }
}
