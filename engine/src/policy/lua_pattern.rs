//! Lua 5.4's pattern matching (`string.find`, `match`, `gmatch`, `gsub`), ported to Rust so a
//! plugin's limits hold inside it.
//!
//! Lua's own matcher is C code that backtracks: a pattern with k quantifiers costs roughly
//! O(n^k), and the VM's instruction hook never runs while it does. This port keeps Lua 5.4's
//! semantics (character classes, sets, anchors, quantifiers, captures, `%b`, `%f`,
//! back-references, `gsub` replacements and its max-n, `find`'s init and plain arguments) but
//! charges every matching step to a [`StepBudget`]: the call's instruction budget and its
//! wall-clock deadline stop it like any Lua code. Output buffers are bounded by the plugin's
//! memory limit, since they are built outside Lua's allocator.

use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::LimitKind;

/// The most captures one pattern may have (`LUA_MAXCAPTURES`).
const MAX_CAPTURES: usize = 32;
/// The deepest recursion of the matcher (`MAXCCALLS`): "pattern too complex" past it.
const MAX_DEPTH: usize = 200;
/// Matching steps between two budget checks.
const STEPS_PER_TICK: u32 = 1_000;

const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// What the matcher charges its steps to.
pub trait StepBudget: Send + Sync + 'static {
    /// Called every `STEPS_PER_TICK` (1,000) steps: `Err` stops the match with that limit.
    fn tick(&self) -> Result<(), LimitKind>;
    /// Record that a limit was hit outside [`StepBudget::tick`] (the output size bound).
    fn exceeded(&self, kind: LimitKind);
}

/// Why a pattern function failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternError {
    /// A Lua error, with Lua's message (malformed pattern, bad capture index, ...).
    Lua(String),
    /// The call's budget ran out.
    Limit(LimitKind),
}

type R<T> = Result<T, PatternError>;

fn lua_err<T>(msg: impl Into<String>) -> R<T> {
    Err(PatternError::Lua(msg.into()))
}

/// Counts matching steps and checks the budget every `STEPS_PER_TICK` (1,000) of them.
pub struct Meter<'a> {
    budget: &'a dyn StepBudget,
    left: u32,
}

impl<'a> Meter<'a> {
    /// A meter charging `budget`.
    pub fn new(budget: &'a dyn StepBudget) -> Self {
        Meter {
            budget,
            left: STEPS_PER_TICK,
        }
    }

    fn step(&mut self) -> R<()> {
        self.left -= 1;
        if self.left == 0 {
            self.left = STEPS_PER_TICK;
            self.budget.tick().map_err(PatternError::Limit)?;
        }
        Ok(())
    }

    /// Charge `n` steps at once (a copy or comparison of `n` bytes).
    fn charge(&mut self, n: usize) -> R<()> {
        let mut n = n as u64;
        while n >= u64::from(self.left) {
            n -= u64::from(self.left);
            self.left = STEPS_PER_TICK;
            self.budget.tick().map_err(PatternError::Limit)?;
        }
        self.left -= n as u32;
        Ok(())
    }
}

/// One capture's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture<'s> {
    /// A substring.
    Text(&'s [u8]),
    /// A position capture `()`: 1-based.
    Position(i64),
}

/// The state of one match attempt (Lua's `MatchState`).
struct Matcher<'s, 'm, 'b> {
    src: &'s [u8],
    pat: &'s [u8],
    level: usize,
    depth: usize,
    capture: [(usize, isize); MAX_CAPTURES],
    meter: &'m mut Meter<'b>,
}

fn class_matches(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        // Deprecated in Lua 5.2 but still matched by 5.4.
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() { !res } else { res }
}

impl<'s, 'm, 'b> Matcher<'s, 'm, 'b> {
    fn new(src: &'s [u8], pat: &'s [u8], meter: &'m mut Meter<'b>) -> Self {
        Matcher {
            src,
            pat,
            level: 0,
            depth: MAX_DEPTH,
            capture: [(0, 0); MAX_CAPTURES],
            meter,
        }
    }

    fn reset(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    /// The pattern byte at `i`, or 0 past its end (C strings end in NUL).
    fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// The subject byte at `i`, or 0 past its end.
    fn sc(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// The index just past the single-character class starting at `p`.
    fn class_end(&self, mut p: usize) -> R<usize> {
        let c = self.pc(p);
        p += 1;
        if c == b'%' {
            if p >= self.pat.len() {
                return lua_err("malformed pattern (ends with '%')");
            }
            return Ok(p + 1);
        }
        if c == b'[' {
            if self.pc(p) == b'^' {
                p += 1;
            }
            // The first character of a set is taken as is, so `[]]` and `[^]]` work.
            loop {
                if p >= self.pat.len() {
                    return lua_err("malformed pattern (missing ']')");
                }
                let c = self.pat[p];
                p += 1;
                if c == b'%' && p < self.pat.len() {
                    p += 1;
                }
                if self.pc(p) == b']' {
                    break;
                }
            }
            return Ok(p + 1);
        }
        Ok(p)
    }

    /// Whether `c` is in the set `[...]` from `p` (at `[`) to `ec` (at `]`).
    fn in_set(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.pc(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.pat[p] == b'%' {
                p += 1;
                if class_matches(c, self.pc(p)) {
                    return sig;
                }
            } else if self.pc(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if self.pat[p] == c {
                return sig;
            }
        }
        !sig
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            b'%' => class_matches(c, self.pc(p + 1)),
            b'[' => self.in_set(c, p, ep - 1),
            x => x == c,
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        if self.depth == 0 {
            return lua_err("pattern too complex");
        }
        self.depth -= 1;
        let r = self.match_here(s, p);
        self.depth += 1;
        r
    }

    fn match_here(&mut self, mut s: usize, mut p: usize) -> R<Option<usize>> {
        let pend = self.pat.len();
        loop {
            self.meter.step()?;
            if p == pend {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if self.pc(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == pend => return Ok((s == self.src.len()).then_some(s)),
                b'%' if self.pc(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(next) => {
                        s = next;
                        p += 4;
                    }
                    None => return Ok(None),
                },
                b'%' if self.pc(p + 1) == b'f' => {
                    p += 2;
                    if self.pc(p) != b'[' {
                        return lua_err("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    if !self.in_set(previous, p, ep - 1) && self.in_set(self.sc(s), p, ep - 1) {
                        p = ep;
                    } else {
                        return Ok(None);
                    }
                }
                b'%' if self.pc(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pc(p + 1))? {
                        Some(next) => {
                            s = next;
                            p += 2;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let quantifier = self.pc(ep);
                    if !self.single_match(s, p, ep) {
                        if matches!(quantifier, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match quantifier {
                        b'?' => {
                            if let Some(r) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(r));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.max_expand(s + 1, p, ep),
                        b'*' => return self.max_expand(s, p, ep),
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.meter.step()?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single_match(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> R<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return lua_err("too many captures");
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        let Some(l) = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CAP_UNFINISHED)
        else {
            return lua_err("invalid pattern capture");
        };
        self.capture[l].1 = (s - self.capture[l].0) as isize;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].1 = CAP_UNFINISHED;
        }
        Ok(r)
    }

    fn match_balance(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return lua_err("malformed pattern (missing arguments to '%b')");
        }
        if self.src.get(s) != Some(&self.pat[p]) {
            return Ok(None);
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        let mut depth = 1;
        for i in s + 1..self.src.len() {
            self.meter.step()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
        }
        Ok(None)
    }

    fn match_capture(&mut self, s: usize, digit: u8) -> R<Option<usize>> {
        let l = i64::from(digit) - i64::from(b'1');
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CAP_UNFINISHED {
            return lua_err(format!("invalid capture index %{}", l + 1));
        }
        let (init, len) = self.capture[l as usize];
        if len < 0 {
            // A position capture never matches text.
            return Ok(None);
        }
        let len = len as usize;
        self.meter.charge(len)?;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    /// Capture `i` of the match `s..e` (the whole match when there are no captures).
    fn capture(&self, i: usize, s: usize, e: usize) -> R<Capture<'s>> {
        if i >= self.level {
            if i != 0 {
                return lua_err(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Capture::Text(&self.src[s..e]));
        }
        let (init, len) = self.capture[i];
        match len {
            CAP_UNFINISHED => lua_err("unfinished capture"),
            CAP_POSITION => Ok(Capture::Position(init as i64 + 1)),
            len => Ok(Capture::Text(&self.src[init..init + len as usize])),
        }
    }

    /// Every capture (`push_captures`): the whole match if there are none and `whole` is set.
    fn captures(&self, whole: Option<(usize, usize)>) -> R<Vec<Capture<'s>>> {
        let n = if self.level == 0 && whole.is_some() {
            1
        } else {
            self.level
        };
        let (s, e) = whole.unwrap_or((0, 0));
        (0..n).map(|i| self.capture(i, s, e)).collect()
    }
}

/// Lua's `posrelatI`: a 1-based start position from a possibly negative index.
fn start_index(pos: i64, len: usize) -> usize {
    if pos > 0 {
        pos as usize
    } else if pos == 0 || pos < -(len as i64) {
        1
    } else {
        (len as i64 + pos + 1) as usize
    }
}

/// A `find` or `match` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'s> {
    /// 1-based first index of the match.
    pub start: usize,
    /// 1-based last index of the match.
    pub end: usize,
    /// The captures as `find` reports them (none for a plain or capture-less find); for `match`,
    /// the whole match when the pattern has no captures.
    pub captures: Vec<Capture<'s>>,
}

/// `string.find` (`is_find`) or `string.match` of `pat` in `src` from `init`.
pub fn find<'s>(
    src: &'s [u8],
    pat: &'s [u8],
    init: i64,
    plain: bool,
    is_find: bool,
    meter: &mut Meter<'_>,
) -> R<Option<Found<'s>>> {
    let init = start_index(init, src.len()) - 1;
    if init > src.len() {
        return Ok(None);
    }
    if is_find && (plain || !pat.iter().any(|c| SPECIALS.contains(c))) {
        // Two-way search: linear, but charge it anyway.
        meter.charge(src.len() - init)?;
        return Ok(memchr::memmem::find(&src[init..], pat).map(|at| Found {
            start: init + at + 1,
            end: init + at + pat.len(),
            captures: Vec::new(),
        }));
    }
    let (anchor, pat) = match pat.first() {
        Some(b'^') => (true, &pat[1..]),
        _ => (false, pat),
    };
    let mut m = Matcher::new(src, pat, meter);
    let mut s1 = init;
    loop {
        m.reset();
        if let Some(e) = m.do_match(s1, 0)? {
            let captures = if is_find {
                m.captures(None)?
            } else {
                m.captures(Some((s1, e)))?
            };
            return Ok(Some(Found {
                start: s1 + 1,
                end: e,
                captures,
            }));
        }
        s1 += 1;
        if anchor || s1 > src.len() {
            return Ok(None);
        }
    }
}

/// The iteration state of `string.gmatch`.
#[derive(Debug, Clone)]
pub struct Gmatch {
    src: Vec<u8>,
    pat: Vec<u8>,
    pos: usize,
    last: Option<usize>,
}

impl Gmatch {
    /// Iterate over the matches of `pat` in `src` from `init`. `^` is not an anchor here.
    pub fn new(src: &[u8], pat: &[u8], init: i64) -> Self {
        let init = (start_index(init, src.len()) - 1).min(src.len() + 1);
        Gmatch {
            src: src.to_vec(),
            pat: pat.to_vec(),
            pos: init,
            last: None,
        }
    }

    /// The captures of the next match, or `None` when there are no more.
    pub fn next_match(&mut self, meter: &mut Meter<'_>) -> R<Option<Vec<Capture<'_>>>> {
        let mut m = Matcher::new(&self.src, &self.pat, meter);
        let mut src = self.pos;
        while src <= self.src.len() {
            m.reset();
            if let Some(e) = m.do_match(src, 0)?
                && Some(e) != self.last
            {
                let captures = m.captures(Some((src, e)))?;
                self.pos = e;
                self.last = Some(e);
                return Ok(Some(captures));
            }
            src += 1;
        }
        self.pos = src;
        Ok(None)
    }
}

/// One match, as a `gsub` replacement sees it.
pub struct MatchView<'v, 's, 'm, 'b> {
    m: &'v Matcher<'s, 'm, 'b>,
    s: usize,
    e: usize,
}

impl<'s> MatchView<'_, 's, '_, '_> {
    /// Capture `i` (0-based); the whole match for 0 when there are no captures.
    pub fn capture(&self, i: usize) -> R<Capture<'s>> {
        self.m.capture(i, self.s, self.e)
    }

    /// Every capture (the whole match when there are none).
    pub fn captures(&self) -> R<Vec<Capture<'s>>> {
        self.m.captures(Some((self.s, self.e)))
    }

    /// The whole match.
    pub fn whole(&self) -> &'s [u8] {
        &self.m.src[self.s..self.e]
    }
}

/// Expand a `gsub` replacement string: `%0`-`%9` are captures, `%%` is `%`.
pub fn expand(repl: &[u8], m: &MatchView<'_, '_, '_, '_>, out: &mut Vec<u8>) -> R<()> {
    let mut i = 0;
    while i < repl.len() {
        let c = repl[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let d = repl.get(i).copied().unwrap_or(0);
        i += 1;
        match d {
            b'%' => out.push(b'%'),
            b'0' => out.extend_from_slice(m.whole()),
            b'1'..=b'9' => match m.capture(usize::from(d - b'1'))? {
                Capture::Text(t) => out.extend_from_slice(t),
                Capture::Position(p) => out.extend_from_slice(p.to_string().as_bytes()),
            },
            _ => return lua_err("invalid use of '%' in replacement string"),
        }
    }
    Ok(())
}

/// `string.gsub`: replace up to `max_n` matches of `pat` in `src`. `replace` gets each match and
/// appends its replacement to the buffer, returning false to keep the original text instead.
/// Returns the new string (`None`: unchanged) and the number of matches. `max_bytes` bounds the
/// result.
pub fn gsub(
    src: &[u8],
    pat: &[u8],
    max_n: Option<i64>,
    max_bytes: usize,
    meter: &mut Meter<'_>,
    replace: &mut dyn FnMut(&MatchView<'_, '_, '_, '_>, &mut Vec<u8>) -> R<bool>,
) -> R<(Option<Vec<u8>>, i64)> {
    let max_n = max_n.unwrap_or(src.len() as i64 + 1);
    let (anchor, pat) = match pat.first() {
        Some(b'^') => (true, &pat[1..]),
        _ => (false, pat),
    };
    let mut m = Matcher::new(src, pat, meter);
    let mut out = Vec::new();
    let mut changed = false;
    let mut n = 0;
    let mut s = 0;
    let mut last = None;
    while n < max_n {
        m.reset();
        match m.do_match(s, 0)? {
            Some(e) if Some(e) != last => {
                n += 1;
                let before = out.len();
                let view = MatchView { m: &m, s, e };
                if replace(&view, &mut out)? {
                    changed = true;
                } else {
                    out.truncate(before);
                    out.extend_from_slice(&src[s..e]);
                }
                m.meter.charge(out.len() - before)?;
                s = e;
                last = Some(e);
            }
            _ if s < src.len() => {
                out.push(src[s]);
                s += 1;
            }
            _ => break,
        }
        if out.len() > max_bytes {
            return Err(PatternError::Limit(LimitKind::Memory));
        }
        if anchor {
            break;
        }
    }
    if !changed {
        return Ok((None, n));
    }
    out.extend_from_slice(&src[s..]);
    if out.len() > max_bytes {
        return Err(PatternError::Limit(LimitKind::Memory));
    }
    Ok((Some(out), n))
}

// ---- The Lua functions ----

fn to_lua_error(budget: &dyn StepBudget, e: PatternError) -> mlua::Error {
    match e {
        PatternError::Lua(msg) => mlua::Error::runtime(msg),
        PatternError::Limit(kind) => {
            budget.exceeded(kind);
            mlua::Error::runtime(format!("plugin exceeded its {kind} limit"))
        }
    }
}

fn bad_argument(n: usize, f: &str, msg: &str) -> mlua::Error {
    mlua::Error::runtime(format!("bad argument #{n} to 'string.{f}' ({msg})"))
}

fn arg(args: &MultiValue, n: usize) -> Value {
    args.get(n - 1).cloned().unwrap_or(Value::Nil)
}

fn type_name(args: &MultiValue, n: usize) -> &'static str {
    match args.get(n - 1) {
        None => "no value",
        Some(v) => v.type_name(),
    }
}

fn string_arg(lua: &Lua, args: &MultiValue, n: usize, f: &str) -> mlua::Result<mlua::LuaString> {
    lua.coerce_string(arg(args, n))?.ok_or_else(|| {
        bad_argument(
            n,
            f,
            &format!("string expected, got {}", type_name(args, n)),
        )
    })
}

fn opt_int_arg(lua: &Lua, args: &MultiValue, n: usize, f: &str) -> mlua::Result<Option<i64>> {
    let v = arg(args, n);
    if v.is_nil() {
        return Ok(None);
    }
    if let Value::Number(x) = v
        && x.is_finite()
    {
        return match lua.coerce_integer(v)? {
            Some(i) => Ok(Some(i)),
            None => Err(bad_argument(n, f, "number has no integer representation")),
        };
    }
    lua.coerce_integer(v)?.map(Some).ok_or_else(|| {
        bad_argument(
            n,
            f,
            &format!("number expected, got {}", type_name(args, n)),
        )
    })
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Nil | Value::Boolean(false))
}

fn capture_value(lua: &Lua, c: &Capture<'_>) -> mlua::Result<Value> {
    Ok(match c {
        Capture::Text(t) => Value::String(lua.create_string(t)?),
        Capture::Position(p) => Value::Integer(*p),
    })
}

fn capture_values(lua: &Lua, caps: &[Capture<'_>]) -> mlua::Result<MultiValue> {
    caps.iter().map(|c| capture_value(lua, c)).collect()
}

/// Replace `string.find`, `match`, `gmatch` and `gsub` in `string` with the metered versions.
/// `max_bytes` bounds a `gsub` result.
pub fn install(
    lua: &Lua,
    string: &Table,
    budget: Arc<dyn StepBudget>,
    max_bytes: usize,
) -> mlua::Result<()> {
    for (name, is_find) in [("find", true), ("match", false)] {
        let b = budget.clone();
        let f = lua.create_function(move |lua, args: MultiValue| {
            let s = string_arg(lua, &args, 1, name)?;
            let p = string_arg(lua, &args, 2, name)?;
            let init = opt_int_arg(lua, &args, 3, name)?.unwrap_or(1);
            let plain = is_find && truthy(&arg(&args, 4));
            let (s, p) = (s.as_bytes(), p.as_bytes());
            let mut meter = Meter::new(b.as_ref());
            let found = find(&s, &p, init, plain, is_find, &mut meter)
                .map_err(|e| to_lua_error(b.as_ref(), e))?;
            let Some(found) = found else {
                return Ok(MultiValue::from_iter([Value::Nil]));
            };
            let mut out = MultiValue::new();
            if is_find {
                out.push_back(Value::Integer(found.start as i64));
                out.push_back(Value::Integer(found.end as i64));
            }
            out.extend(capture_values(lua, &found.captures)?);
            Ok(out)
        })?;
        string.raw_set(name, f)?;
    }

    let b = budget.clone();
    let gmatch = lua.create_function(move |lua, args: MultiValue| {
        let s = string_arg(lua, &args, 1, "gmatch")?;
        let p = string_arg(lua, &args, 2, "gmatch")?;
        let init = opt_int_arg(lua, &args, 3, "gmatch")?.unwrap_or(1);
        let state = std::sync::Mutex::new(Gmatch::new(&s.as_bytes(), &p.as_bytes(), init));
        let b = b.clone();
        lua.create_function(move |lua, ()| {
            let mut state = state.lock().expect("gmatch state");
            let mut meter = Meter::new(b.as_ref());
            match state.next_match(&mut meter) {
                Ok(Some(caps)) => capture_values(lua, &caps),
                Ok(None) => Ok(MultiValue::from_iter([Value::Nil])),
                Err(e) => Err(to_lua_error(b.as_ref(), e)),
            }
        })
    })?;
    string.raw_set("gmatch", gmatch)?;

    let b = budget;
    let gsub_fn = lua.create_function(move |lua, args: MultiValue| {
        let s = string_arg(lua, &args, 1, "gsub")?;
        let p = string_arg(lua, &args, 2, "gsub")?;
        let repl = arg(&args, 3);
        let max_n = opt_int_arg(lua, &args, 4, "gsub")?;
        let src = s.as_bytes();
        let pat = p.as_bytes();
        let mut meter = Meter::new(b.as_ref());
        // A Lua error raised by a replacement function or `__index`, passed through unchanged.
        let mut lua_error: Option<mlua::Error> = None;
        let mut keep = |v: mlua::Result<Value>, out: &mut Vec<u8>| -> R<bool> {
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    lua_error = Some(e);
                    return lua_err("");
                }
            };
            if !truthy(&v) {
                return Ok(false);
            }
            let type_name = v.type_name();
            match lua.coerce_string(v) {
                Ok(Some(text)) if !matches!(type_name, "table" | "userdata") => {
                    out.extend_from_slice(&text.as_bytes());
                    Ok(true)
                }
                Ok(_) => lua_err(format!("invalid replacement value (a {type_name})")),
                Err(e) => {
                    lua_error = Some(e);
                    lua_err("")
                }
            }
        };
        let result = match &repl {
            Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                let text = lua
                    .coerce_string(repl.clone())?
                    .expect("a string or number");
                let text = text.as_bytes();
                gsub(&src, &pat, max_n, max_bytes, &mut meter, &mut |m, out| {
                    expand(&text, m, out).map(|()| true)
                })
            }
            Value::Table(t) => gsub(&src, &pat, max_n, max_bytes, &mut meter, &mut |m, out| {
                let key = m.capture(0)?;
                let v = capture_value(lua, &key).and_then(|k| t.get::<Value>(k));
                keep(v, out)
            }),
            Value::Function(f) => {
                let f: &Function = f;
                gsub(&src, &pat, max_n, max_bytes, &mut meter, &mut |m, out| {
                    let caps = m.captures()?;
                    let v = capture_values(lua, &caps).and_then(|a| f.call::<Value>(a));
                    keep(v, out)
                })
            }
            _ => {
                return Err(bad_argument(
                    3,
                    "gsub",
                    &format!(
                        "string/function/table expected, got {}",
                        type_name(&args, 3)
                    ),
                ));
            }
        };
        let (text, n) = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(inner) = lua_error.take() {
                    return Err(inner);
                }
                return Err(to_lua_error(b.as_ref(), e));
            }
        };
        let text = match text {
            Some(t) => lua.create_string(t)?,
            None => s.clone(),
        };
        Ok((text, n))
    })?;
    string.raw_set("gsub", gsub_fn)?;
    Ok(())
}

#[cfg(test)]
#[path = "lua_pattern_tests.rs"]
mod tests;
