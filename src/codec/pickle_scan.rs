//! A pre-flight check of a pickle: which opcodes it uses, before serde-pickle decodes it.
//!
//! serde-pickle never runs code, but it turns a class instance (`NEWOBJ`, `BUILD`, ...) into
//! an empty or partial dict without a word. We want that to be an error: a peer sending an
//! object we cannot represent must hear about it, not get a silently different value. So
//! the opcode stream is walked first and rejected if it constructs objects, names any global
//! beyond the few builtins plain data needs (sets, frozensets, bytearrays and bytes in old
//! protocols), or uses extension or persistent references. What passes is plain data:
//! None, bools, ints, floats, strings, bytes, lists, tuples, dicts, sets.

/// Why a pickle was refused.
pub(crate) fn check(pickle: &[u8]) -> Result<(), String> {
    let mut at = 0;
    while at < pickle.len() {
        let op = pickle[at];
        at += 1;
        let arg = match op {
            // No argument.
            b'(' | b'0' | b'1' | b'2' | b'N' | b'R' | b'a' | b'd' | b'}' | b'e' | b'l' | b']'
            | b's' | b't' | b')' | b'u' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | 0x8f | 0x90 | 0x91
            | 0x93 | 0x94 | 0x97 | 0x98 => Arg::None,
            b'.' => return Ok(()),
            // Text up to a newline.
            b'F' | b'I' | b'L' | b'S' | b'V' | b'g' | b'p' => Arg::Line,
            b'c' => Arg::Global,
            b'J' | b'j' | b'r' => Arg::Fixed(4),
            b'K' | b'h' | b'q' | 0x80 => Arg::Fixed(1),
            b'M' => Arg::Fixed(2),
            b'G' | 0x95 => Arg::Fixed(8),
            b'U' | b'C' | 0x8a | 0x8c => Arg::Sized(1),
            b'T' | b'X' | b'B' | 0x8b => Arg::Sized(4),
            0x8d | 0x8e | 0x96 => Arg::Sized(8),
            0x81 | 0x92 | b'b' | b'i' | b'o' => {
                return Err("the pickle builds a class instance".into());
            }
            0x82..=0x84 => return Err("the pickle uses the extension registry".into()),
            b'P' | b'Q' => return Err("the pickle uses persistent ids".into()),
            other => return Err(format!("unknown pickle opcode {other:#04x}")),
        };
        at = match arg {
            Arg::None => at,
            Arg::Fixed(n) => at + n,
            Arg::Line => line_end(pickle, at)? + 1,
            Arg::Sized(width) => {
                let len_bytes = pickle.get(at..at + width).ok_or("truncated pickle")?;
                let mut len = [0u8; 8];
                len[..width].copy_from_slice(len_bytes);
                let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| "huge length")?;
                at.checked_add(width + len).ok_or("huge length")?
            }
            Arg::Global => {
                let module_end = line_end(pickle, at)?;
                let name_end = line_end(pickle, module_end + 1)?;
                let module = &pickle[at..module_end];
                let name = &pickle[module_end + 1..name_end];
                if !allowed_global(module, name) {
                    return Err(format!(
                        "the pickle refers to {}.{}",
                        String::from_utf8_lossy(module),
                        String::from_utf8_lossy(name)
                    ));
                }
                name_end + 1
            }
        };
        if at > pickle.len() {
            return Err("truncated pickle".into());
        }
    }
    Err("pickle without STOP".into())
}

enum Arg {
    None,
    Fixed(usize),
    Line,
    Sized(usize),
    Global,
}

fn line_end(pickle: &[u8], from: usize) -> Result<usize, String> {
    pickle
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        .map(|i| from + i)
        .ok_or_else(|| "truncated pickle".into())
}

/// Globals plain data needs in older protocols (`STACK_GLOBAL` names are checked by
/// serde-pickle itself, which refuses to resolve any other).
fn allowed_global(module: &[u8], name: &[u8]) -> bool {
    matches!(
        (module, name),
        (
            b"builtins" | b"__builtin__",
            b"set" | b"frozenset" | b"bytearray" | b"list" | b"int"
        ) | (b"_codecs", b"encode")
    )
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn plain_data_passes() {
        // pickle.dumps({'a': [1, 2.5, None, True, b'x', 'y']}, protocol=4)
        let p = b"\x80\x04\x95\x21\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88C\x01x\x94\x8c\x01y\x94es.";
        assert_eq!(check(p), Ok(()));
    }

    #[test]
    fn instances_and_unknown_globals_are_refused() {
        // pickle.dumps(C(), protocol=4) for a class C in __main__
        let p = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x01C\x94\x93\x94)\x81\x94.";
        assert!(check(p).unwrap_err().contains("instance"));
        // pickle.dumps(os.system, protocol=0)
        assert!(
            check(b"cposix\nsystem\np0\n.")
                .unwrap_err()
                .contains("posix.system")
        );
        assert!(check(b"c__builtin__\nset\n(lp0\nI1\natp1\nRp2\n.").is_ok());
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        for p in [&b"\x80"[..], b"X\xff\xff", b"\x8d\x01", b"cmod", b"K"] {
            assert!(check(p).is_err(), "{p:?}");
        }
    }
}
