//! Development certificates for trying TLS and mutual TLS:
//!
//! ```sh
//! cargo run --example gen-certs -- certs
//! cargo run -- --config config/mtls.toml
//! mosquitto_sub -h localhost -p 8883 --cafile certs/ca.crt \
//!     --cert certs/device-1.crt --key certs/device-1.key -t '#' -v
//! ```
//!
//! Writes into OUTDIR: a CA (`ca.crt`, `ca.key`), a server certificate for
//! `localhost` and `127.0.0.1` (`server.crt`, `server.key`) and two client
//! certificates with Common Names `device-1` and `device-2`. Every key is new on
//! each run. These are for development only: keep real CA keys off disk.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: cargo run --example gen-certs -- OUTDIR")?;
    let out = Path::new(&out);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = named("Rookery development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    write(out, "ca.crt", &ca.self_signed(&ca_key)?.pem())?;
    write(out, "ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    server.distinguished_name = named("localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(out, "server", server, &issuer)?;

    for device in ["device-1", "device-2"] {
        let mut client = CertificateParams::default();
        client.distinguished_name = named(device);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        sign(out, device, client, &issuer)?;
    }
    println!(
        "wrote ca, server, device-1 and device-2 certificates to {}",
        out.display()
    );
    Ok(())
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Rookery development");
    name.push(DnType::CommonName, common_name);
    name
}

fn sign(
    out: &Path,
    name: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    write(
        out,
        &format!("{name}.crt"),
        &params.signed_by(&key, issuer)?.pem(),
    )?;
    write(out, &format!("{name}.key"), &key.serialize_pem())
}

fn write(out: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = out.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
