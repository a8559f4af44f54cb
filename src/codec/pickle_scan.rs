//! A pre-flight check of a pickle: which opcodes it uses, before serde-pickle decodes it.
//!
//! serde-pickle never runs code, but it turns a class instance (`NEWOBJ`, `BUILD`, ...) into
//! an empty or partial dict without a word. We want that to be an error: a peer sending an
//! object we cannot represent must hear about it, not get a silently different value. So
//! the opcode stream is walked first and rejected if it constructs objects, names any global
//! beyond the few builtins plain data needs (sets, frozensets, bytearrays and bytes in old
//! protocols), or uses extension or persistent references. What passes is plain data:
//! None, bools, ints, floats, strings, bytes, lists, tuples, dicts, sets.
//!
//! The walk also follows the pickle machine's stack and memo far enough to know how deeply
//! the result nests (memo references included), and refuses anything deeper than
//! [`MAX_DEPTH`]: serde-pickle builds, converts and drops values recursively, so a few
//! kilobytes of `]]]]...` would otherwise overflow the stack and abort the process. It
//! also counts what serde-pickle would make, in values (a string or bytes weighs one value
//! per 8 bytes): each value pushed; a whole copy of the arguments of each `REDUCE`, which
//! serde-pickle copies then; and the result with every memo reference in it expanded, as
//! serde-pickle resolves them at the end. So 50 bytes of `]2\x86` repeated would otherwise
//! grow into 2^22 values and more (see [`max_values`]). What no Python pickler writes and
//! serde-pickle turns into copies is refused: `DUP`, memoizing a value twice, reusing a memo
//! id, more than [`MAX_DEPTH`] marks open, a container inside itself. And every container
//! built, not only the result, must nest within [`MAX_DEPTH`]: serde-pickle drops what it
//! pops recursively too. Decimal ints longer than CPython's own
//! limit (4 300 digits) are refused too: serde-pickle parses them in quadratic time.

use std::collections::{HashMap, HashSet};

/// The deepest nesting accepted. Well inside a 2 MiB thread stack in debug builds, where
/// serde-pickle needs up to ~10 KiB per level.
pub(crate) const MAX_DEPTH: usize = 100;

/// The most values a pickle of `len` bytes may expand to: a million, plus 16 per byte. A
/// pickle without shared references makes about one value per byte, or a few more for
/// tuples built from a mark (serde-pickle keeps the mark's 128-value stack); Python's
/// shared references (`[x] * n`) make more, and beyond this the pickle is refused rather
/// than copied out (serde-pickle keeps each value in 32 bytes or more).
pub(crate) fn max_values(len: usize) -> u64 {
    (1 << 20) + 16 * len as u64
}

/// The longest decimal int line (`INT`, `LONG`) accepted: CPython's default limit on the
/// digits of an int converted from text, plus a sign and the `L` suffix.
const MAX_INT_LINE: usize = 4_300 + 2;

/// Why a pickle was refused.
pub(crate) fn check(pickle: &[u8]) -> Result<(), String> {
    let mut shape = Shape {
        budget: max_values(pickle.len()),
        max_result: max_values(pickle.len()),
        ..Shape::default()
    };
    let mut at = 0;
    while at < pickle.len() {
        let op = pickle[at];
        at += 1;
        let start = at;
        let arg = match op {
            // No argument.
            b'(' | b'0' | b'1' | b'2' | b'N' | b'R' | b'a' | b'd' | b'}' | b'e' | b'l' | b']'
            | b's' | b't' | b')' | b'u' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | 0x8f | 0x90 | 0x91
            | 0x93 | 0x94 | 0x97 | 0x98 => Arg::None,
            b'.' => return shape.finish(),
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
            Arg::Line => {
                let end = line_end(pickle, at)?;
                if matches!(op, b'I' | b'L') && end - at > MAX_INT_LINE {
                    return Err(format!(
                        "the pickle has an int of {} digits (at most {})",
                        end - at,
                        MAX_INT_LINE - 2
                    ));
                }
                end + 1
            }
            Arg::Sized(width) => {
                let len_bytes = pickle.get(at..at + width).ok_or("truncated pickle")?;
                let mut len = [0u8; 8];
                len[..width].copy_from_slice(len_bytes);
                let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| "huge length")?;
                at.checked_add(width)
                    .and_then(|a| a.checked_add(len))
                    .ok_or("huge length")?
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
        shape.apply(op, pickle, start, at)?;
    }
    Err("pickle without STOP".into())
}

/// A value on the pickle machine's stack: plain (with its weight, see [`weight`]), a string
/// (where its bytes are in the pickle, for `STACK_GLOBAL`'s names), or a container (an
/// index into `children`).
///
/// Items are told apart by identity: a plain value by where it was pushed, a string by
/// where its bytes are, a container by its index. (The same item twice on the stack or in
/// the memo is one value referred to twice.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Item {
    Scalar(u64, usize),
    Text(usize, usize),
    Node(usize),
}

/// What serde-pickle allocates for the stack each `MARK` starts (128 values), which a list,
/// tuple or frozenset built from it keeps.
const MARK_VALUES: u64 = 128;

/// What a dict (opcode `}` or `d`) or a set (`EMPTY_SET`, `FROZENSET`, or built by `REDUCE`)
/// weighs beyond its items, in values: serde-pickle makes each a B-tree, whose first node
/// takes about 750 bytes for a dict and 370 for a set (some 22 and 11 values).
fn map_values(op: u8) -> u64 {
    match op {
        b'}' | b'd' => 22,
        0x8f | 0x91 => 11,
        _ => 0,
    }
}

/// What a plain value whose argument took `len` bytes of the pickle weighs, in values: one,
/// plus one per 8 bytes (a copy of a string or bytes copies them all).
fn weight(len: usize) -> u64 {
    1 + len as u64 / 8
}

/// Just enough of the pickle machine to know the nesting of what it builds.
#[derive(Debug, Default)]
struct Shape {
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    /// The items in `memo`.
    memoized: HashSet<Item>,
    /// The containers inside each container.
    children: Vec<Vec<usize>>,
    /// The weight of the plain values (strings included) each container holds.
    scalars: Vec<u64>,
    /// Values serde-pickle is still allowed to make as it goes (pushes, `REDUCE` copies).
    budget: u64,
    /// The most values the result may expand to.
    max_result: u64,
}

const MALFORMED: &str = "malformed pickle";
const TOO_MANY: &str =
    "the pickle expands to more values than its size allows (shared references are copied out)";
const RECURSIVE: &str = "the pickle holds a container inside itself";

impl Shape {
    /// Counts `values` made by serde-pickle against the budget.
    fn spend(&mut self, values: u64) -> Result<(), String> {
        self.budget = self.budget.checked_sub(values).ok_or(TOO_MANY)?;
        Ok(())
    }

    /// Counts a whole copy of `item` (`REDUCE`'s arguments) against the budget.
    fn spend_copy(&mut self, item: Item) -> Result<(), String> {
        let values = match item {
            Item::Node(n) => self.expanded(n, self.budget)?,
            other => plain(&[other]),
        };
        self.spend(values)
    }

    /// The values a copy of container `root` makes (itself, its plain values, and its
    /// containers', each shared one once per reference); an error past `budget` or for a
    /// container inside itself. Each container is visited once and each reference adds at
    /// least one, so the work is within the count.
    fn expanded(&self, root: usize, budget: u64) -> Result<u64, String> {
        let mut sizes: HashMap<usize, u64> = HashMap::new();
        let mut on_path: HashSet<usize> = HashSet::from([root]);
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&child) = self.children[node].get(*next) {
                *next += 1;
                if on_path.contains(&child) {
                    return Err(RECURSIVE.into());
                }
                if !sizes.contains_key(&child) {
                    on_path.insert(child);
                    path.push((child, 0));
                }
                continue;
            }
            let total = self.children[node]
                .iter()
                .fold(1 + self.scalars[node], |sum, c| {
                    sum.saturating_add(sizes.get(c).copied().unwrap_or(0))
                });
            if total > budget {
                return Err(TOO_MANY.into());
            }
            sizes.insert(node, total);
            on_path.remove(&node);
            path.pop();
        }
        Ok(sizes.get(&root).copied().unwrap_or(0))
    }

    fn node(&mut self, items: &[Item]) -> Item {
        self.children.push(
            items
                .iter()
                .filter_map(|i| match i {
                    Item::Node(n) => Some(*n),
                    Item::Scalar(..) | Item::Text(..) => None,
                })
                .collect(),
        );
        self.scalars.push(plain(items));
        Item::Node(self.children.len() - 1)
    }

    /// Adds `extra` values to what container `item` weighs.
    fn weigh(&mut self, item: Item, extra: u64) {
        if let Item::Node(n) = item {
            self.scalars[n] += extra;
        }
    }

    fn pop(&mut self) -> Result<Item, String> {
        self.stack.pop().ok_or_else(|| MALFORMED.to_owned())
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, String> {
        let mark = self.marks.pop().ok_or(MALFORMED)?;
        if mark > self.stack.len() {
            return Err(MALFORMED.into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<Item, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| MALFORMED.to_owned())
    }

    /// Puts `items` into the container on top of the stack.
    fn add(&mut self, items: &[Item]) -> Result<(), String> {
        if let Item::Node(n) = self.top()? {
            for item in items {
                if let Item::Node(c) = item {
                    self.children[n].push(*c);
                }
            }
            self.scalars[n] += plain(items);
        }
        Ok(())
    }

    /// Runs opcode `op`, whose argument is `pickle[start..end]`.
    fn apply(&mut self, op: u8, pickle: &[u8], start: usize, end: usize) -> Result<(), String> {
        let arg = &pickle[start..end];
        match op {
            b'(' => {
                if self.marks.len() >= MAX_DEPTH {
                    return Err(format!(
                        "the pickle opens more than {MAX_DEPTH} marks at once"
                    ));
                }
                self.marks.push(self.stack.len());
            }
            // POP: of a mark, if one is on top (as CPython's unpickler does).
            b'0' => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => drop(self.pop_mark()?),
            b'2' => return Err("the pickle uses DUP, which no Python pickler writes".into()),
            b'}' | b']' | b')' | 0x8f => {
                let extra = map_values(op);
                self.spend(1 + extra)?;
                let empty = self.node(&[]);
                self.weigh(empty, extra);
                self.stack.push(empty);
            }
            b'd' | b'l' | b't' | 0x91 => {
                // A list, tuple or frozenset keeps the stack its MARK started.
                let extra = map_values(op);
                self.spend(if op == b'd' { 1 } else { MARK_VALUES } + extra)?;
                let items = self.pop_mark()?;
                let node = self.node(&items);
                self.weigh(node, extra);
                self.stack.push(node);
            }
            0x85..=0x87 => {
                self.spend(1)?;
                let n = usize::from(op - 0x84);
                let from = self.stack.len().checked_sub(n).ok_or(MALFORMED)?;
                let items = self.stack.split_off(from);
                let node = self.node(&items);
                self.stack.push(node);
            }
            b'a' => {
                let value = self.pop()?;
                self.add(&[value])?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.add(&[key, value])?;
            }
            b'e' | b'u' | 0x90 => {
                let items = self.pop_mark()?;
                self.add(&items)?;
            }
            // set(list), frozenset(list), ...: as deep as its argument tuple.
            b'R' => {
                let args = self.pop()?;
                // serde-pickle copies the arguments (memo references resolved) here.
                self.spend_copy(args)?;
                self.spend(1)?;
                self.pop()?;
                let node = match args {
                    Item::Node(n) => {
                        let inner: Vec<Item> = self.children[n]
                            .clone()
                            .into_iter()
                            .map(Item::Node)
                            .collect();
                        let node = self.node(&inner);
                        if let Item::Node(m) = node {
                            self.scalars[m] = self.scalars[n];
                        }
                        // set() or frozenset() (or list()): weighed as a set.
                        self.spend(map_values(0x8f))?;
                        self.weigh(node, map_values(0x8f));
                        node
                    }
                    other => other,
                };
                self.stack.push(node);
            }
            // STACK_GLOBAL: its names are strings pushed (or memoized) before it.
            0x93 => {
                let (name, module) = (self.pop()?, self.pop()?);
                let (Item::Text(n0, n1), Item::Text(m0, m1)) = (name, module) else {
                    return Err("the pickle names a global it does not spell out".into());
                };
                let (module, name) = (&pickle[m0..m1], &pickle[n0..n1]);
                if !allowed_global(module, name) {
                    return Err(format!(
                        "the pickle refers to {}.{}",
                        String::from_utf8_lossy(module),
                        String::from_utf8_lossy(name)
                    ));
                }
                self.spend(1)?;
                self.stack.push(Item::Scalar(1, start));
            }
            // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8: a length, then the UTF-8 text.
            0x8c | b'X' | 0x8d => {
                let width = match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                };
                let item = Item::Text(start + width, end);
                self.spend(plain(&[item]))?;
                self.stack.push(item);
            }
            // PUT, BINPUT, LONG_BINPUT, MEMOIZE. serde-pickle copies a value memoized
            // again (a reference's), and rebinds references to an id put again; no Python
            // pickler does either, so both are refused.
            b'p' | b'q' | b'r' | 0x94 => {
                let top = self.top()?;
                let id = if op == 0x94 {
                    self.memo.len() as u64
                } else {
                    memo_id(op, arg)?
                };
                if !self.memoized.insert(top) {
                    return Err("the pickle memoizes one value twice".into());
                }
                if self.memo.insert(id, top).is_some() {
                    return Err(format!("the pickle memoizes twice under id {id}"));
                }
            }
            // A memo reference: serde-pickle copies the value when it resolves the result,
            // as it then is (counted in `finish`).
            b'g' | b'h' | b'j' => {
                let item = *self.memo.get(&memo_id(op, arg)?).ok_or(MALFORMED)?;
                self.stack.push(item);
            }
            0x80 | 0x95 | 0x98 => {}
            // Everything else pushes one plain value.
            _ => {
                let item = Item::Scalar(weight(arg.len()), start);
                self.spend(plain(&[item]))?;
                self.stack.push(item);
            }
        }
        Ok(())
    }

    /// Checks every container built, the result and those dropped on the way or kept in the
    /// memo alike (serde-pickle builds and drops them all recursively): none nests deeper
    /// than [`MAX_DEPTH`] or holds itself, and the result, with its shared containers copied
    /// out as serde-pickle resolves them, stays within what the pickle's size allows.
    fn finish(&self) -> Result<(), String> {
        // Iterative depth-first searches: the height and expanded size of each container,
        // computed once.
        let count = self.children.len();
        let mut height: Vec<Option<usize>> = vec![None; count];
        let mut values: Vec<u64> = vec![0; count];
        let mut on_path = vec![false; count];
        for start in 0..count {
            if height[start].is_some() {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            on_path[start] = true;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                if let Some(&child) = self.children[node].get(*next) {
                    *next += 1;
                    if on_path[child] {
                        return Err(RECURSIVE.into());
                    }
                    if height[child].is_none() {
                        on_path[child] = true;
                        path.push((child, 0));
                        if path.len() > MAX_DEPTH {
                            return Err(format!("the pickle nests deeper than {MAX_DEPTH} levels"));
                        }
                    }
                    continue;
                }
                let below = self.children[node]
                    .iter()
                    .filter_map(|&c| height[c])
                    .max()
                    .unwrap_or(0);
                if below + 1 > MAX_DEPTH {
                    return Err(format!("the pickle nests deeper than {MAX_DEPTH} levels"));
                }
                height[node] = Some(below + 1);
                values[node] = self.children[node]
                    .iter()
                    .fold(1 + self.scalars[node], |sum, &c| {
                        sum.saturating_add(values[c])
                    });
                on_path[node] = false;
                path.pop();
            }
        }
        if let Item::Node(root) = self.top()? {
            if values[root] > self.max_result {
                return Err(format!(
                    "the pickle expands to {} values (memo references copied out), over \
                     the {} its size allows",
                    values[root], self.max_result
                ));
            }
        }
        Ok(())
    }
}

/// What the plain values among `items` weigh.
fn plain(items: &[Item]) -> u64 {
    items
        .iter()
        .map(|i| match i {
            Item::Scalar(w, _) => *w,
            Item::Text(from, to) => weight(to - from),
            Item::Node(_) => 0,
        })
        .sum()
}

fn memo_id(op: u8, arg: &[u8]) -> Result<u64, String> {
    match op {
        b'p' | b'g' => std::str::from_utf8(arg)
            .ok()
            .and_then(|text| text.trim_end_matches('\n').trim().parse().ok())
            .ok_or_else(|| MALFORMED.to_owned()),
        b'q' | b'h' => Ok(u64::from(arg[0])),
        _ => Ok(u64::from(u32::from_le_bytes(
            arg.try_into().map_err(|_| MALFORMED)?,
        ))),
    }
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

/// Globals plain data needs, by `GLOBAL` (older protocols) or `STACK_GLOBAL` (4 and 5).
/// serde-pickle resolves a few more (`copyreg._reconstructor`, say, into an empty dict), so
/// both are checked here.
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
    use super::{check, max_values};

    #[test]
    fn stack_globals_of_plain_data_pass() {
        // pickle.dumps(bytearray(b'ab'), protocol=4): builtins.bytearray by STACK_GLOBAL,
        // its names memoized.
        let p = b"\x80\x04\x95\x23\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\tbytearray\x94\x93\x94C\x02ab\x94\x85\x94R\x94.";
        assert_eq!(check(p), Ok(()));
    }

    /// A pickle made of `parts`, each repeated as many times as it says.
    fn pickle(parts: &[(&[u8], usize)]) -> Vec<u8> {
        parts.iter().flat_map(|&(part, n)| part.repeat(n)).collect()
    }

    #[test]
    fn pickles_that_expand_past_their_share_are_refused() {
        // DUP, which serde-pickle runs by copying (a list, then DUP and TUPLE2 n times
        // doubles it n times), is refused: no Python pickler writes it.
        assert!(check(b"\x80\x04]2\x86.").unwrap_err().contains("DUP"));
        let k = 4_000;
        // A list of k Nones referred to k times from another list (BINPUT once, BINGET k
        // times): serde-pickle copies it out k times.
        let p = pickle(&[
            (b"\x80\x04(", 1),
            (b"N", k),
            (b"l\x94]\x94(", 1),
            (b"h\x00", k),
            (b"e.", 1),
        ]);
        assert!(max_values(p.len()) < (k * k) as u64);
        assert!(check(&p).unwrap_err().contains("expands to"));
        // The same with the list empty while it is referred to, and grown afterwards
        // through a reference: serde-pickle copies it as it is at the end.
        let p = pickle(&[
            (b"\x80\x02]q\x000](", 1),
            (b"h\x00", k),
            (b"eh\x00(", 1),
            (b"N", k),
            (b"e0.", 1),
        ]);
        assert!(check(&p).unwrap_err().contains("expands to"));
        // A 64 KiB string referred to k times: a copy of a string copies its bytes.
        let p = pickle(&[
            (b"\x80\x04]\x94(X\x00\x00\x01\x00", 1),
            (b"a", 1 << 16),
            (b"\x94", 1),
            (b"h\x01", k),
            (b"e.", 1),
        ]);
        assert!(check(&p).unwrap_err().contains("expands to"));
        // A memoized argument tuple fetched for list() k times, the lists left under the
        // result: serde-pickle copies the arguments at each REDUCE.
        let p = pickle(&[
            (b"\x80\x02(", 1),
            (b"N", k),
            (b"l\x85q\x000", 1),
            (b"c__builtin__\nlist\nh\x00R", k),
            (b"N.", 1),
        ]);
        assert!(check(&p).unwrap_err().contains("expands to"));
        // A third review's inputs. A value memoized again (a reference, which serde-pickle
        // then copies) ...
        let mut p = pickle(&[(b"\x80\x02(", 1), (b"N", k), (b"lq\x00", 1)]);
        for i in 1..k as u32 {
            p.push(b'r');
            p.extend_from_slice(&i.to_le_bytes());
        }
        p.push(b'.');
        assert!(check(&p).unwrap_err().contains("twice"));
        // ... an id put again, which rebinds the references made before ...
        let p = pickle(&[
            (b"\x80\x02]q\x000](", 1),
            (b"h\x00", k),
            (b"e(", 1),
            (b"N", k),
            (b"lq\x000.", 1),
        ]);
        assert!(check(&p).unwrap_err().contains("twice"));
        // ... a list() of a list appended back into that list ...
        let p = pickle(&[
            (b"\x80\x02(", 1),
            (b"N", k),
            (b"lq\x000c__builtin__\nlist\nh\x00\x85Rq\x010h\x00(", 1),
            (b"h\x01", k),
            (b"e.", 1),
        ]);
        assert!(check(&p).is_err());
        // ... a deep value dropped before the result (serde-pickle drops it recursively) ...
        let d = 100_000;
        let p = pickle(&[(b"\x80\x03", 1), (b"]", d), (b"a", d - 1), (b"0N.", 1)]);
        assert!(check(&p).unwrap_err().contains("deeper"));
        // ... and MARKs, each of which serde-pickle gives a stack of 128 values.
        let p = pickle(&[(b"\x80\x02](", 1), (b"(l", 100_000), (b"e.", 1)]);
        assert!(check(&p).unwrap_err().contains("expands to"));
        let p = pickle(&[(b"\x80\x02", 1), (b"(", 1_000), (b"N.", 1)]);
        assert!(check(&p).unwrap_err().contains("marks"));
        // Dicts weigh their B-trees: 500 one-entry dicts referred to 700 times (3 KB).
        let p = pickle(&[
            (b"\x80\x04]\x94(", 1),
            (b"}NNs", 500),
            (b"e0](", 1),
            (b"h\x00", 700),
            (b"e.", 1),
        ]);
        assert!(check(&p).unwrap_err().contains("expands to"));
        // References fetched and dropped again cost nothing: serde-pickle keeps references.
        let p = pickle(&[
            (b"\x80\x04(", 1),
            (b"N", k),
            (b"l\x94", 1),
            (b"h\x000", k),
            (b".", 1),
        ]);
        assert_eq!(check(&p), Ok(()));
        // Python's own shared references pass: [x] * 1000 for a list x of ten ints.
        let p = pickle(&[
            (
                b"\x80\x04]\x94(](K\x01K\x02K\x03K\x04K\x05K\x06K\x07K\x08K\x09K\x0ae\x94",
                1,
            ),
            (b"h\x01", 999),
            (b"e.", 1),
        ]);
        assert_eq!(check(&p), Ok(()));
        // A plain list of a million Nones is one value per byte: fine.
        let p = pickle(&[(b"\x80\x04]\x94(", 1), (b"N", 1_000_000), (b"e.", 1)]);
        assert_eq!(check(&p), Ok(()));
    }

    #[test]
    fn long_decimal_ints_and_huge_lengths_are_refused() {
        let mut p = b"\x80\x02L".to_vec();
        p.extend(std::iter::repeat_n(b'7', 100_000));
        p.extend_from_slice(b"L\n.");
        assert!(check(&p).unwrap_err().contains("digits"));
        let mut p = b"\x80\x02L".to_vec();
        p.extend(std::iter::repeat_n(b'7', 4_300));
        p.extend_from_slice(b"L\n.");
        assert_eq!(check(&p), Ok(()), "CPython's own limit passes");
        // BINBYTES8 claiming 2^64 - 1 bytes: refused, no overflow.
        let p = b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xffNNNN.";
        assert!(check(p).is_err());
    }

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
        assert!(check(p).unwrap_err().contains("__main__.C"));
        // The same class built from its module and name only (NEWOBJ cut out): the name
        // alone is refused, as it comes.
        let p = b"\x80\x04\x8c\x08__main__\x94\x8c\x01C\x94\x93\x94)R.";
        assert!(check(p).unwrap_err().contains("__main__.C"));
        // An instance through copyreg._reconstructor, which serde-pickle would resolve into
        // an empty dict.
        let p = b"\x80\x04\x8c\x07copyreg\x8c\x0e_reconstructor\x93NNN\x87R.";
        assert!(check(p).unwrap_err().contains("copyreg._reconstructor"));
        // A STACK_GLOBAL whose names are not strings.
        assert!(check(b"\x80\x04NN\x93.").unwrap_err().contains("spell"));
        // pickle.dumps(os.system, protocol=0)
        assert!(
            check(b"cposix\nsystem\np0\n.")
                .unwrap_err()
                .contains("posix.system")
        );
        // pickle.dumps({1}, protocol=0)
        assert!(check(b"c__builtin__\nset\np0\n((lp1\nI1\natp2\nRp3\n.").is_ok());
    }

    /// `depth` nested lists, written as CPython's protocol 3 does (`]` then `a`).
    fn nested(depth: usize) -> Vec<u8> {
        let mut p = b"\x80\x03".to_vec();
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        p
    }

    /// A chain of `depth` lists, each holding the previous one by memo reference.
    fn memo_chain(depth: usize) -> Vec<u8> {
        let mut p = b"\x80\x03]r\0\0\0\0".to_vec();
        for i in 1..depth as u32 {
            p.extend_from_slice(b"]r");
            p.extend_from_slice(&i.to_le_bytes());
            p.push(b'j');
            p.extend_from_slice(&(i - 1).to_le_bytes());
            p.extend_from_slice(b"a0");
        }
        p.push(b'j');
        p.extend_from_slice(&(depth as u32 - 1).to_le_bytes());
        p.push(b'.');
        p
    }

    #[test]
    fn nesting_is_bounded() {
        assert_eq!(check(&nested(super::MAX_DEPTH)), Ok(()));
        assert!(
            check(&nested(super::MAX_DEPTH + 1))
                .unwrap_err()
                .contains("deeper")
        );
        assert!(check(&nested(1_000_000)).unwrap_err().contains("deeper"));
        assert_eq!(check(&memo_chain(super::MAX_DEPTH)), Ok(()));
        assert!(
            check(&memo_chain(super::MAX_DEPTH + 1))
                .unwrap_err()
                .contains("deeper")
        );
        // Wide is fine: a list of 100,000 empty lists.
        let mut wide = b"\x80\x03](".to_vec();
        wide.extend(std::iter::repeat_n(b']', 100_000));
        wide.extend_from_slice(b"e.");
        assert_eq!(check(&wide), Ok(()));
    }

    #[test]
    fn the_deepest_accepted_pickle_decodes_on_a_small_stack() {
        // What libtest and std::thread give a thread by default.
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let a = crate::pickle::loads(&nested(super::MAX_DEPTH)).is_ok();
                let b = crate::pickle::loads(&memo_chain(super::MAX_DEPTH)).is_ok();
                a && b
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(decoded);
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        for p in [&b"\x80"[..], b"X\xff\xff", b"\x8d\x01", b"cmod", b"K"] {
            assert!(check(p).is_err(), "{p:?}");
        }
    }
}
