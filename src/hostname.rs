//! The machine's host name: the `host` tag (`[service] host_tag`) and the default cluster
//! member name (`[cluster] name`).

/// The kernel's host name, as Telegraf's `host` tag has it.
pub fn hostname() -> Result<String, std::io::Error> {
    let mut buf = vec![0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(end);
    let name = String::from_utf8_lossy(&buf).trim().to_string();
    if name.is_empty() {
        return Err(std::io::Error::other("the host name is empty"));
    }
    Ok(name)
}
