//! What a PTX module declares (PTX ISA: `.version`, `.target`, `.entry` with its `.param` list and `.maxntid`):
//! enough for the software device to accept or refuse a module as the driver's JIT would, and to know how many
//! parameter bytes a launch passes. Also used by build.rs on nvcc's PTX.

/// One `.entry` of a PTX module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Size in bytes of each `.param`, in order.
    pub params: Vec<usize>,
    /// `.maxntid x, y, z` as x·y·z, when declared.
    pub max_threads: Option<u32>,
}

impl Entry {
    /// Bytes of all parameters (each at its alignment; our kernels take one struct).
    pub fn param_bytes(&self) -> usize {
        self.params.iter().sum()
    }
}

/// `.version` and `.target` of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: (u32, u32),
    /// `sm_80` → 80.
    pub target_sm: u32,
}

/// The module's `.version` and `.target` directives.
pub fn header(text: &str) -> Result<Header, String> {
    let directive = |name: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .ok_or_else(|| format!("no {name} directive"))
    };
    let version = directive(".version")?;
    let (major, minor) = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("bad .version `{version}`"))?;
    let target = directive(".target")?;
    let target_sm = target
        .split(',')
        .next()
        .and_then(|t| t.trim().strip_prefix("sm_"))
        .and_then(|t| {
            t.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("bad .target `{target}`"))?;
    Ok(Header {
        version: (major, minor),
        target_sm,
    })
}

/// Size of a scalar `.param` type (`.u64`, `.f32`, …).
fn scalar_bytes(ty: &str) -> Option<usize> {
    let bits: usize = ty.trim_start_matches('.').get(1..)?.parse().ok()?;
    Some(bits / 8)
}

/// Every `.entry` of the module, in order.
pub fn entries(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".entry ") {
        let after = &rest[at + ".entry ".len()..];
        let open = after.find('(').ok_or("`.entry` without a parameter list")?;
        let close = after
            .find(')')
            .ok_or("unterminated `.entry` parameter list")?;
        let body = after.find('{').ok_or("`.entry` without a body")?;
        let name = after[..open].trim().to_string();
        let mut params = Vec::new();
        for decl in after[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            let words: Vec<&str> = decl.split_whitespace().collect();
            let bytes = match words.as_slice() {
                [".param", ".align", _, ".b8", array] => array
                    .split_once('[')
                    .and_then(|(_, n)| n.trim_end_matches(']').parse().ok()),
                [".param", ty, _] => scalar_bytes(ty),
                _ => None,
            };
            params.push(bytes.ok_or_else(|| format!("{name}: cannot read parameter `{decl}`"))?);
        }
        let performance = &after[close + 1..body];
        let max_threads = performance
            .split_once(".maxntid")
            .map(|(_, dims)| {
                dims.split(['\n', '.'])
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|d| d.trim().parse::<u32>())
                    .product::<Result<u32, _>>()
                    .map_err(|e| format!("{name}: bad .maxntid: {e}"))
            })
            .transpose()?;
        out.push(Entry {
            name,
            params,
            max_threads,
        });
        rest = &after[body..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = "
//
.version 8.8
.target sm_80
.address_size 64

.visible .entry add_bf16(
	.param .align 8 .b8 add_bf16_param_0[48]
)
.maxntid 256, 1, 1
{
	ret;
}
.visible .entry two(
	.param .u64 two_param_0,
	.param .f32 two_param_1
)
{
	ret;
}
";

    #[test]
    fn entries_params_and_bounds() {
        let e = entries(MODULE).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "add_bf16");
        assert_eq!(e[0].param_bytes(), 48);
        assert_eq!(e[0].max_threads, Some(256));
        assert_eq!(e[1].params, vec![8, 4]);
        assert_eq!(e[1].max_threads, None);
        assert_eq!(
            header(MODULE).unwrap(),
            Header {
                version: (8, 8),
                target_sm: 80
            }
        );
    }

    #[test]
    fn malformed_parameters_are_named() {
        let err = entries(".entry k(\n .param .weird k_p\n)\n{\n}").unwrap_err();
        assert!(err.contains("k_p"), "{err}");
    }
}
