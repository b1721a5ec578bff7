//! What the software device reads from a cubin (an ELF file, machine EM_CUDA): the SM it was built for and its
//! kernels (global FUNC symbols). The rest of what the hardware would use (register counts, shared memory,
//! parameter sizes) comes from the build-time table (src/kernel_table.rs).

/// ELF machine number of CUDA binaries.
const EM_CUDA: u16 = 190;

/// The parts of a cubin the device checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Cubin {
    /// `90` for sm_90.
    pub sm: u32,
    pub kernels: Vec<String>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// Whether `head` starts like an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// The length of the ELF image at `image` (the driver is given only a pointer): the furthest end of its section
/// headers and sections.
///
/// # Safety
/// `image` points at a complete ELF64 image.
pub unsafe fn image_len(image: *const u8) -> Option<usize> {
    // SAFETY: an ELF64 header is 64 bytes.
    let head = unsafe { std::slice::from_raw_parts(image, 64) };
    let (shoff, shentsize, shnum) = (
        u64_at(head, 0x28)?,
        u16_at(head, 0x3a)? as usize,
        u16_at(head, 0x3c)? as usize,
    );
    let table_end = shoff.checked_add(shentsize.checked_mul(shnum)?)?;
    // SAFETY: the section header table lies inside the image.
    let table = unsafe { std::slice::from_raw_parts(image, table_end) };
    let mut end = table_end;
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let (kind, off, size) = (
            u32_at(table, h + 4)?,
            u64_at(table, h + 0x18)?,
            u64_at(table, h + 0x20)?,
        );
        if kind != 8 {
            // Not SHT_NOBITS: the section's bytes are in the file.
            end = end.max(off.checked_add(size)?);
        }
    }
    Some(end)
}

/// Parses a cubin.
pub fn parse(elf: &[u8]) -> Result<Cubin, String> {
    let bad = || "malformed ELF".to_string();
    if !is_elf(elf) || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 image".into());
    }
    let machine = u16_at(elf, 0x12).ok_or_else(bad)?;
    if machine != EM_CUDA {
        return Err(format!("ELF machine {machine} is not CUDA ({EM_CUDA})"));
    }
    let flags = u32_at(elf, 0x30).ok_or_else(bad)?;
    // From ELF ABI version 7 (CUDA 12) the SM sits in bits 8..16 of e_flags, before it in bits 0..8.
    let sm = if elf.get(8).copied().unwrap_or(0) >= 7 {
        (flags >> 8) & 0xff
    } else {
        flags & 0xff
    };
    let (shoff, shentsize, shnum) = (
        u64_at(elf, 0x28).ok_or_else(bad)?,
        u16_at(elf, 0x3a).ok_or_else(bad)? as usize,
        u16_at(elf, 0x3c).ok_or_else(bad)? as usize,
    );
    let section = |i: usize| -> Option<(u32, usize, usize, usize, usize)> {
        let h = shoff + i * shentsize;
        Some((
            u32_at(elf, h + 4)?,
            u64_at(elf, h + 0x18)?,
            u64_at(elf, h + 0x20)?,
            u32_at(elf, h + 0x28)? as usize,
            u64_at(elf, h + 0x38)?,
        ))
    };
    let mut kernels = Vec::new();
    for i in 0..shnum {
        let (kind, off, size, link, entsize) = section(i).ok_or_else(bad)?;
        if kind != 2 {
            continue; // SHT_SYMTAB only
        }
        let (_, str_off, str_size, _, _) = section(link).ok_or_else(bad)?;
        let strings = elf.get(str_off..str_off + str_size).ok_or_else(bad)?;
        for s in (off..off + size).step_by(entsize.max(24)) {
            let (name, info) = (
                u32_at(elf, s).ok_or_else(bad)? as usize,
                *elf.get(s + 4).ok_or_else(bad)?,
            );
            // STB_GLOBAL FUNC symbols are the kernels.
            if info >> 4 == 1 && info & 0xf == 2 {
                let bytes = strings.get(name..).ok_or_else(bad)?;
                let end = bytes.iter().position(|&b| b == 0).ok_or_else(bad)?;
                kernels.push(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
        }
    }
    Ok(Cubin { sm, kernels })
}
