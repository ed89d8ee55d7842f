//! `userstate checkpoint keygen|sign`: Ed25519 keys and signed checkpoints of the hash chain
//! (docs/adr/0020-hash-chain.md). `verify --checkpoint FILE --pubkey FILE` checks one.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use userstate::chain::{self, Checkpoint};
use userstate::verify::verify_store;

use crate::args::StoreArgs;

/// Options of `userstate checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    command: CheckpointCommand,
}

#[derive(Debug, Subcommand)]
enum CheckpointCommand {
    /// Make an Ed25519 key pair: the signing key (0600; keep it away from the data) and the
    /// public key auditors verify with.
    Keygen(KeygenArgs),
    /// Verify the hash chain, then print a checkpoint of its head signed with the key (JSON).
    Sign(SignArgs),
}

/// Options of `userstate checkpoint keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the signing key (created, never overwritten; mode 0600).
    #[arg(long, env = "USERSTATE_KEY")]
    key: PathBuf,
    /// Where to write the public key.
    #[arg(long, env = "USERSTATE_PUBKEY")]
    pubkey: PathBuf,
}

/// Options of `userstate checkpoint sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The signing key written by `checkpoint keygen`.
    #[arg(long, env = "USERSTATE_KEY")]
    key: PathBuf,
}

/// Runs `userstate checkpoint …`.
pub async fn run(args: CheckpointArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CheckpointCommand::Keygen(args) => keygen(&args),
        CheckpointCommand::Sign(args) => sign(args).await,
    }
}

fn create_new(path: &Path, mode: u32, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = chain::generate_key().map_err(anyhow::Error::msg)?;
    create_new(&args.key, 0o600, &chain::signing_key_text(&key))?;
    create_new(
        &args.pubkey,
        0o644,
        &chain::verifying_key_text(&key.verifying_key()),
    )?;
    eprintln!(
        "wrote the signing key to {} and the public key to {}",
        args.key.display(),
        args.pubkey.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read the signing key {}", args.key.display()))?;
    let key = chain::parse_signing_key(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("in {}", args.key.display()))?;
    let store = crate::maintenance::open_for_scan(&args.store).await?;
    let during = || format!("verifying {}", args.store.describe());
    let report = verify_store(&*store, |_| {}).await.with_context(during)?;
    if report.chain_breaks > 0 {
        for f in report
            .findings
            .iter()
            .filter(|f| f.problem.contains("hash"))
        {
            eprintln!("FINDING: {f}");
        }
        bail!(
            "the hash chain of {} is broken ({} break(s)): refusing to sign it",
            args.store.describe(),
            report.chain_breaks
        );
    }
    let checkpoint = Checkpoint::sign(&key, report.head_position, report.head_hash);
    println!("{}", serde_json::to_string_pretty(&checkpoint)?);
    eprintln!(
        "signed position {} (hash {})",
        checkpoint.position, checkpoint.hash
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a checkpoint and its public key and checks the signature.
pub fn load_checked(checkpoint: &Path, pubkey: &Path) -> anyhow::Result<Checkpoint> {
    let text = std::fs::read_to_string(checkpoint)
        .with_context(|| format!("cannot read the checkpoint {}", checkpoint.display()))?;
    let cp: Checkpoint = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a checkpoint", checkpoint.display()))?;
    let key_text = std::fs::read_to_string(pubkey)
        .with_context(|| format!("cannot read the public key {}", pubkey.display()))?;
    let key = chain::parse_verifying_key(&key_text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("in {}", pubkey.display()))?;
    cp.check_signature(&key).map_err(anyhow::Error::msg)?;
    Ok(cp)
}
