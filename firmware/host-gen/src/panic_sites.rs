//! `host-gen panic-sites ELF... --root REPO [--committed FILE] [--out FILE] [--update]`: every place in a firmware ELF
//! that branches to a panic, found from the ELF itself so it can be regenerated after any change (new kernels
//! included).
//!
//! The ELF is the `panic-check` build linked with `--defsym=ember_firmware_reachable_panic=0` (the panic handler
//! calls that undefined function; when nothing references the handler the build links without it and there are no
//! sites). Method:
//! 1. `arm-none-eabi-objdump -d` gives every function and its direct branches (`b`, `bl`, `b<cond>`, `cbz`, …);
//! 2. the panic functions are the panic handler (`rust_begin_unwind`) and, repeatedly, every function that never
//!    returns (no `bx lr` / `pop {…pc}` / `ldr pc`) and calls only panic functions (`panic_fmt`,
//!    `panic_bounds_check`, `slice_index_fail`, …);
//! 3. a site is a branch from any other function to a panic function; `arm-none-eabi-addr2line -i` turns its address
//!    into the chain of inlined frames, and the site is named by the innermost frame in the repository (its function
//!    and file), with the panic function's short name as its kind.
//!
//! The list is compared with the committed `firmware/panic-sites.txt` by key `kind function file` (line numbers
//! are informational and not compared, so edits elsewhere in a file do not fail the check): a key that is not
//! committed is a new panic site and fails; a committed key no longer found is reported (`--update` drops it).
//! Each committed line carries, after `#`, why the site cannot fire.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Func {
    name: String,
    returns: bool,
    /// (instruction address, target function name)
    calls: Vec<(u64, String)>,
}

fn is_branch(m: &str) -> bool {
    let m = m.trim_end_matches(".w").trim_end_matches(".n");
    if m == "cbz" || m == "cbnz" || m == "b" || m == "bl" {
        return true;
    }
    const CONDS: [&str; 15] = [
        "eq", "ne", "cs", "cc", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt",
    ];
    m.strip_prefix('b')
        .map(|c| CONDS.contains(&c) || c == "le" || c == "al")
        .unwrap_or(false)
}

fn is_return(m: &str, ops: &str) -> bool {
    let m = m.trim_end_matches(".w").trim_end_matches(".n");
    (m.starts_with("bx") && ops.trim_start().starts_with("lr"))
        || ((m.starts_with("pop") || m.starts_with("ldm")) && ops.contains("pc"))
        || (m.starts_with("ldr") && ops.trim_start().starts_with("pc"))
}

fn disassemble(elf: &Path) -> Result<Vec<(u64, Func)>, Box<dyn Error>> {
    let out = Command::new("arm-none-eabi-objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(elf)
        .output()
        .map_err(|e| format!("arm-none-eabi-objdump: {e}"))?;
    if !out.status.success() {
        return Err(format!("objdump failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut funcs: Vec<(u64, Func)> = Vec::new();
    for line in text.lines() {
        // "00001b70 <name>:"
        if let Some((addr, rest)) = line.split_once(" <") {
            if let (Ok(a), Some(name)) = (u64::from_str_radix(addr, 16), rest.strip_suffix(">:")) {
                funcs.push((
                    a,
                    Func {
                        name: name.to_string(),
                        returns: false,
                        calls: Vec::new(),
                    },
                ));
                continue;
            }
        }
        // "    1b7c:\tbl\t1b70 <name>"
        let Some((addr, rest)) = line.trim_start().split_once(":\t") else {
            continue;
        };
        let Ok(a) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let Some((_, f)) = funcs.last_mut() else {
            continue;
        };
        let mut parts = rest.splitn(2, '\t');
        let m = parts.next().unwrap_or("").trim();
        let ops = parts.next().unwrap_or("");
        if is_return(m, ops) {
            f.returns = true;
        }
        if is_branch(m) {
            if let Some(t) = ops.split_once('<').and_then(|(_, t)| t.strip_suffix('>')) {
                if !t.contains('+') && t != f.name {
                    f.calls.push((a, t.to_string()));
                }
            }
        }
    }
    Ok(funcs)
}

/// One inlined frame: function, file, line.
type Frame = (String, String, u32);

fn addr2line(elf: &Path, addrs: &[u64]) -> Result<Vec<Vec<Frame>>, Box<dyn Error>> {
    // One address per query; a marker address (0) separates the answers.
    let mut cmd = Command::new("arm-none-eabi-addr2line");
    cmd.args(["-i", "-f", "-C", "-a", "-e"]).arg(elf);
    for a in addrs {
        cmd.arg(format!("{a:x}"));
    }
    let out = cmd
        .output()
        .map_err(|e| format!("arm-none-eabi-addr2line: {e}"))?;
    let text = String::from_utf8(out.stdout)?;
    let mut res: Vec<Vec<Frame>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("0x") {
            res.push(Vec::new());
            continue;
        }
        let func = l.to_string();
        let loc = lines.next().unwrap_or("??:0");
        let (file, line) = loc.rsplit_once(':').unwrap_or((loc, "0"));
        let line: u32 = line
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        if let Some(v) = res.last_mut() {
            v.push((func, file.to_string(), line));
        }
    }
    if res.len() != addrs.len() {
        return Err(format!(
            "addr2line answered {} of {} addresses",
            res.len(),
            addrs.len()
        )
        .into());
    }
    Ok(res)
}

/// `core::panicking::panic_bounds_check` -> `panic_bounds_check`, from a (possibly mangled) symbol.
fn short_kind(sym: &str, demangled: &HashMap<String, String>) -> String {
    let d = demangled.get(sym).map(String::as_str).unwrap_or(sym);
    let d = d.split("::h").next().unwrap_or(d);
    d.rsplit("::").next().unwrap_or(d).to_string()
}

fn demangle_all(names: &[String]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(child) = Command::new("arm-none-eabi-c++filt").args(names).output() else {
        return out;
    };
    let text = String::from_utf8_lossy(&child.stdout);
    for (n, d) in names.iter().zip(text.lines()) {
        out.insert(n.clone(), d.to_string());
    }
    out
}

/// Strip generic arguments and crate hashes so a key survives unrelated edits: `<a::B>::f::<2>` -> `a::B::f`.
fn clean_fn(f: &str) -> String {
    let mut s = String::new();
    let mut depth = 0i32;
    let chars: Vec<char> = f.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // "::<" opens generic arguments: skip them.
        if depth == 0
            && c == ':'
            && chars.get(i + 1) == Some(&':')
            && chars.get(i + 2) == Some(&'<')
        {
            depth = 1;
            i += 3;
            continue;
        }
        if depth > 0 {
            if c == '<' {
                depth += 1;
            } else if c == '>' {
                depth -= 1;
            }
            i += 1;
            continue;
        }
        if c != '<' && c != '>' {
            s.push(c);
        }
        i += 1;
    }
    // "[1a2b3c]" crate disambiguators.
    let mut out = String::new();
    let mut skip = false;
    for c in s.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            _ if !skip => out.push(c),
            _ => {}
        }
    }
    out.replace(' ', "")
}

pub fn main(args: &[String]) -> Result<(), Box<dyn Error>> {
    let mut it = args.iter();
    let mut elfs: Vec<PathBuf> = Vec::new();
    let mut root: Option<PathBuf> = None;
    let mut committed: Option<PathBuf> = None;
    let mut out_path: Option<PathBuf> = None;
    let mut update = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--update" => update = true,
            "--root" | "--committed" | "--out" => {
                let v = PathBuf::from(it.next().ok_or_else(|| format!("{a} needs a value"))?);
                match a.as_str() {
                    "--root" => root = Some(v),
                    "--committed" => committed = Some(v),
                    _ => out_path = Some(v),
                }
            }
            _ if !a.starts_with("--") => elfs.push(a.into()),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    if elfs.is_empty() {
        return Err("panic-sites needs at least one ELF".into());
    }
    let root = std::fs::canonicalize(root.ok_or("--root REPO is needed")?)?;
    let root_s = format!("{}/", root.display());
    // key "kind function file" -> lines (union over the ELFs)
    let mut found: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut report = String::new();
    for elf in &elfs {
        scan(elf, &root_s, &mut found, &mut report)?;
    }
    for (k, lines) in &found {
        let l: Vec<String> = lines.iter().map(u32::to_string).collect();
        report.push_str(&format!("{k}  # lines {}\n", l.join(",")));
    }
    if let Some(p) = &out_path {
        std::fs::write(p, &report)?;
    }
    compare(&found, committed.as_deref(), update, &report)
}

/// Adds the sites of one ELF to `found`, a summary line to `report`.
fn scan(
    elf: &Path,
    root_s: &str,
    found: &mut BTreeMap<String, BTreeSet<u32>>,
    report: &mut String,
) -> Result<(), Box<dyn Error>> {
    let funcs = disassemble(elf)?;
    let handler = funcs
        .iter()
        .find(|(_, f)| f.name.contains("rust_begin_unwind"))
        .map(|(_, f)| f.name.clone());
    let mut panics: BTreeSet<String> = BTreeSet::new();
    if let Some(h) = &handler {
        panics.insert(h.clone());
        loop {
            let before = panics.len();
            for (_, f) in &funcs {
                if !panics.contains(&f.name)
                    && !f.returns
                    && !f.calls.is_empty()
                    && f.calls.iter().all(|(_, t)| panics.contains(t))
                {
                    panics.insert(f.name.clone());
                }
            }
            if panics.len() == before {
                break;
            }
        }
    }
    // (address, kind, enclosing function symbol)
    let mut sites: Vec<(u64, &str, &str)> = Vec::new();
    for (_, f) in &funcs {
        if panics.contains(&f.name) {
            continue;
        }
        for (a, t) in &f.calls {
            if panics.contains(t) {
                sites.push((*a, t, &f.name));
            }
        }
    }
    let mut all_names: Vec<String> = panics.iter().cloned().collect();
    all_names.extend(sites.iter().map(|s| s.2.to_string()));
    all_names.sort();
    all_names.dedup();
    let demangled = demangle_all(&all_names);
    let frames = if sites.is_empty() {
        Vec::new()
    } else {
        addr2line(elf, &sites.iter().map(|s| s.0).collect::<Vec<_>>())?
    };
    let before = found.len();
    for ((_, target, within), fr) in sites.iter().zip(&frames) {
        let kind = short_kind(target, &demangled);
        // The innermost frame in the repository; else (no line information for the repository's code at this
        // address) the innermost frame of an ember crate, file "?"; else the function the branch is in, file "?".
        let pick = fr
            .iter()
            .find(|(_, file, _)| file.starts_with(root_s))
            .cloned()
            .or_else(|| {
                fr.iter()
                    .find(|(f, _, _)| clean_fn(f).starts_with("ember_"))
                    .map(|(f, _, _)| (f.clone(), "?".to_string(), 0))
            })
            .or_else(|| {
                let d = demangled.get(*within).map_or(*within, String::as_str);
                Some((d.to_string(), "?".to_string(), 0))
            });
        let (func, file, line) = pick.unwrap_or(("??".into(), "??".into(), 0));
        let file = file.strip_prefix(root_s).unwrap_or(&file).to_string();
        let key = format!("{kind}  {}  {file}", clean_fn(&func));
        found.entry(key).or_default().insert(line);
    }

    report.push_str(&format!(
        "# {}: {} panic functions, {} branch sites\n",
        elf.display(),
        panics.len(),
        sites.len()
    ));
    println!(
        "panic-sites: {}: {} panic functions, {} branch sites, {} new distinct (kind, function, file)",
        elf.display(),
        panics.len(),
        sites.len(),
        found.len() - before
    );
    Ok(())
}

/// Compares the sites with the committed list (or prints them when there is none).
fn compare(
    found: &BTreeMap<String, BTreeSet<u32>>,
    committed: Option<&Path>,
    update: bool,
    report: &str,
) -> Result<(), Box<dyn Error>> {
    let Some(cpath) = committed else {
        print!("{report}");
        return Ok(());
    };
    let ctext = std::fs::read_to_string(cpath).unwrap_or_default();
    let mut header = String::new();
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for l in ctext.lines() {
        if l.starts_with('#') || l.trim().is_empty() {
            if known.is_empty() {
                header.push_str(l);
                header.push('\n');
            }
            continue;
        }
        let (key, why) = l.split_once(" # ").unwrap_or((l, ""));
        known.insert(key.trim_end().to_string(), why.trim().to_string());
    }
    let new: Vec<&String> = found.keys().filter(|k| !known.contains_key(*k)).collect();
    let gone: Vec<&String> = known.keys().filter(|k| !found.contains_key(*k)).collect();
    for k in &gone {
        println!("panic-sites: gone (no longer in the ELF): {k}");
    }
    for k in &new {
        println!(
            "panic-sites: NEW: {k}  (lines {:?})",
            found.get(*k).map(|s| s.iter().collect::<Vec<_>>())
        );
    }
    if update {
        let mut text = header;
        for k in found.keys() {
            let why = known
                .get(k)
                .cloned()
                .unwrap_or_else(|| "TODO: why it cannot fire".into());
            text.push_str(&format!("{k} # {why}\n"));
        }
        std::fs::write(cpath, text)?;
        println!("panic-sites: UPDATED {}", cpath.display());
        let todo = found.keys().filter(|k| !known.contains_key(*k)).count()
            + found
                .keys()
                .filter(|k| {
                    known
                        .get(*k)
                        .is_some_and(|w| w.is_empty() || w.starts_with("TODO"))
                })
                .count();
        if todo > 0 {
            return Err(format!(
                "{todo} site(s) in {} are marked TODO: say why each cannot fire",
                cpath.display()
            )
            .into());
        }
        return Ok(());
    }
    if !new.is_empty() {
        return Err(format!(
            "{} new panic site(s) not in {} (UPDATE=1 adds them; then say why each cannot fire)",
            new.len(),
            cpath.display()
        )
        .into());
    }
    // A site recorded by `--update` but never explained is not a checked site.
    let unexplained: Vec<&String> = known
        .iter()
        .filter(|(k, why)| found.contains_key(*k) && (why.is_empty() || why.starts_with("TODO")))
        .map(|(k, _)| k)
        .collect();
    for k in &unexplained {
        println!("panic-sites: UNEXPLAINED: {k}");
    }
    if !unexplained.is_empty() {
        return Err(format!(
            "{} panic site(s) in {} without a reason why they cannot fire (replace the TODO)",
            unexplained.len(),
            cpath.display()
        )
        .into());
    }
    println!(
        "panic-sites: every site is in {} ({} listed)",
        cpath.display(),
        known.len()
    );
    Ok(())
}
