#!/usr/bin/env node
// A MegaNet client in JavaScript, written from docs/protocol.md against the unmodified .proto files: identities,
// sealing, proof of work, the envelope's signing bytes and id, receipts with their tree head and inclusion proof, the
// log's consistency from one head to the next (audit), and the mailbox's signed challenges. The repository's tests drive it against a real node and the C# client
// (tests/MegaNet.Node.Tests/JavaScriptClientTests.cs), so the protocol document is checked by a second implementation.
//
//   node meganet.mjs id new FILE                  create an identity (the same file format as `meganet id new`)
//   node meganet.mjs id show FILE                 print its contact card
//   node meganet.mjs status [--node URL]          the node's Status as JSON
//   node meganet.mjs send -i FILE --to CARD --text TEXT [--node URL] [--node-id HEX]
//   node meganet.mjs fetch -i FILE --node-id HEX [--node URL] [--after SEQ] [--ack]
//   node meganet.mjs listen -i FILE --node-id HEX [--node URL] [--after SEQ] [--count N]
//   node meganet.mjs audit [--node-id HEX] [--heads FILE | -i FILE] [--node URL]
//   (each that talks to a node also [--timeout DURATION], default 30s: how long a call waits for the node's answer)
//
// Crypto: libsodium (libsodium-wrappers) for Ed25519, X25519, BLAKE2b and XChaCha20-Poly1305; Node's crypto for
// HKDF-SHA256 and SHA-256. Protobuf: @grpc/proto-loader for the service, protobufjs for the sealed inner message.

import { createHash, hkdfSync, X509Certificate } from 'node:crypto';
import { checkServerIdentity, rootCertificates } from 'node:tls';
import { closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import _sodium from 'libsodium-wrappers';

await _sodium.ready;
const sodium = _sodium;

const protos = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'MegaNet.Api', 'Protos');
const CLASSES = [1024, 4096, 16384, 65536];
const TEXT = 'text/plain; charset=utf-8';
// The most proof-of-work bits this client pays for (as MegaNetClientOptions.MaxPowBits): 2^24 hashes take seconds;
// a node that asks for more is refused rather than left spinning for hours.
const MAX_POW_BITS = 24;
// The most sequence numbers one Ack takes (docs/protocol.md).
const MAX_ACK_SEQS = 1000;
// The latest sending time a message may carry: 9999-12-31T23:59:59.999Z, the C# client's bound (.NET's
// DateTimeOffset.MaxValue); a later one makes the message unreadable, as there.
const MAX_SENT_UNIX_MS = 253_402_300_799_999n;
const utf8 = (s) => Buffer.from(s, 'utf8');
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const blake2b256 = (...parts) => Buffer.from(sodium.crypto_generichash(32, Buffer.concat(parts)));
const u32be = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const u64be = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; };
const i64be = (n) => { const b = Buffer.alloc(8); b.writeBigInt64BE(BigInt(n)); return b; };
const hkdf = (ikm, salt, info) => Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));

class UsageError extends Error {}

// What the node or a sender chose, made safe to print on a line (as meganet's Printable): control and format characters
// and line and paragraph separators drive a terminal or reorder and hide text ("\r\e[2K" erases the line, and what
// follows looks like this client's own verdict), so each is shown as \uXXXX (\UXXXXXXXX beyond the BMP).
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const hex4 = (unit) => `\\u${unit.toString(16).padStart(4, '0')}`;
const printable = (text) => String(text).replace(/\p{Cs}/gu, '\ufffd').replace(HIDDEN, (c) => {
  const point = c.codePointAt(0);
  return point > 0xffff ? `\\U${point.toString(16).padStart(8, '0')}` : hex4(point);
});

// A JSON line whose strings hold no such character as it is: JSON.stringify escapes C0 controls only, and leaves C1
// controls, bidi overrides and U+2028 in place. The same values once parsed.
const isGrpcError = (error) => error.code !== undefined && error.details !== undefined;

// An error on one line: a gRPC error's details are the node's words (or the transport's), with its status; every line
// is made printable all the same.
const describe = (error) => (isGrpcError(error)
  ? `${printable(error.details)} (gRPC ${grpc.status[error.code] ?? error.code})`
  : printable(error.message));

const jsonLine = (value) => `${JSON.stringify(value).replace(HIDDEN, (c) => [...Array(c.length).keys()].map((i) => hex4(c.charCodeAt(i))).join(''))}\n`;

// ---- identities and cards (protocol.md, "Identities and addresses") ----

function identityFrom(file) {
  const signing = sodium.crypto_sign_seed_keypair(Buffer.from(file.signing_seed, 'hex'));
  const encryptionSecret = Buffer.from(file.encryption_key, 'hex');
  const signingPublic = Buffer.from(signing.publicKey), encryptionPublic = Buffer.from(sodium.crypto_scalarmult_base(encryptionSecret));
  const address = addressOf(signingPublic, encryptionPublic);
  return {
    signingPublic,
    signingSecret: signing.privateKey,
    encryptionSecret,
    encryptionPublic,
    sendingSeed: Buffer.from(file.sending_seed, 'hex'),
    address,
    card: cardText(signingPublic, encryptionPublic, address),
  };
}

// The file's keys, each 32 bytes in hex. As `meganet`'s Identity.Load, a file with one missing or damaged is refused:
// Buffer.from(_, 'hex') stops at the first character that is not hex, and a key cut short or grown would still make
// some identity (a sending seed of another length even signs envelopes, under keys the C# client would not derive).
const KEY_FIELDS = ['signing_seed', 'encryption_key', 'sending_seed'];

function loadIdentity(path) {
  if (!path) throw new UsageError('pass the identity file with -i FILE');
  let file;
  try {
    file = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    throw new UsageError(`${path} is not a MegaNet identity file (${error.message})`);
  }
  if (file?.version !== 1) throw new UsageError(`${path} is not a version 1 MegaNet identity file`);
  for (const field of KEY_FIELDS) {
    if (file[field] == null) throw new UsageError(`${path} is not a version 1 MegaNet identity file: it has no ${field}`);
    if (typeof file[field] !== 'string' || !/^[0-9a-fA-F]{64}$/.test(file[field])) {
      throw new UsageError(`${path} holds a damaged key: its ${field} is not 64 hex digits (32 bytes)`);
    }
  }
  const identity = identityFrom(file);
  // Any 32 bytes are a key: a changed digit would make another identity without a word. The card saved with the keys
  // says whose they were (as Identity.Load checks).
  if (file.card != null && file.card !== identity.card) {
    throw new UsageError(`${path} holds a damaged key: its keys do not make the card saved with them`);
  }
  return identity;
}

const addressOf = (signingPublic, encryptionPublic) => blake2b256(signingPublic, encryptionPublic);

// The card's checksum is the first 4 bytes of the address: pass the address when it is at hand.
function cardText(signingPublic, encryptionPublic, address = addressOf(signingPublic, encryptionPublic)) {
  const raw = Buffer.concat([signingPublic, encryptionPublic, address.subarray(0, 4)]);
  return 'mn1' + raw.toString('base64url');
}

// Takes a card only in the one form `meganet`'s ContactCard.Parse takes: Node's base64url decoder would skip a
// character outside the alphabet, stop at '=', take '+' and '/', and ignore the spare bits of the last character.
function parseCard(text) {
  // Cards travel through chat, mail and QR codes, which wrap long words: whitespace anywhere is not part of it (the
  // characters .NET's char.IsWhiteSpace names; `\s` would also drop U+FEFF, and keep U+0085).
  const compact = text.replace(/\p{White_Space}+/gu, '');
  if (!compact.startsWith('mn1')) throw new UsageError('a MegaNet contact card starts with mn1');
  const body = compact.slice(3);
  if (!/^[A-Za-z0-9_-]*$/.test(body)) throw new UsageError('the contact card is not valid base64url (A-Z, a-z, 0-9, - and _, no padding)');
  const raw = Buffer.from(body, 'base64url');
  if (raw.length !== 68) throw new UsageError('the contact card is not 68 bytes of base64url');
  const signingPublic = raw.subarray(0, 32), encryptionPublic = raw.subarray(32, 64);
  const address = addressOf(signingPublic, encryptionPublic);
  if (!address.subarray(0, 4).equals(raw.subarray(64))) {
    throw new UsageError('the contact card has a typo (its checksum does not match)');
  }
  // base64url leaves spare bits in the last character: one card, one text.
  if (cardText(signingPublic, encryptionPublic, address) !== compact) {
    throw new UsageError('the contact card is not in its canonical form (its last character is off); copy it again');
  }
  return { signingPublic, encryptionPublic, address };
}

// Envelopes to one recipient are signed by a key derived for it: one pseudonym per pair.
function sendingKeyFor(identity, recipientAddress) {
  const seed = hkdf(identity.sendingSeed, Buffer.alloc(0), Buffer.concat([utf8('meganet-sending-v1'), recipientAddress]));
  const pair = sodium.crypto_sign_seed_keypair(seed);
  return { publicKey: Buffer.from(pair.publicKey), secretKey: pair.privateKey };
}

// ---- sealing (protocol.md, "Sealing") ----

// keepCase: the proto's own field names, as @grpc/proto-loader is told below (protobufjs would camel-case them).
const inner = new protobuf.Root().loadSync(join(protos, 'meganet', 'v1', 'envelope.proto'), { keepCase: true }).lookupType('meganet.v1.SealedContent');

function contentDigest(recipientAddress, senderAddress, sentUnixMs, contentType, fileName, content) {
  const field = (bytes) => Buffer.concat([u32be(bytes.length), bytes]);
  return blake2b256(utf8('meganet-content-v2'), recipientAddress, senderAddress, i64be(sentUnixMs),
    field(utf8(contentType)), field(utf8(fileName)), field(content));
}

// The sealing key and the associated data, from the X25519 secret the two sides share (protocol.md, "Sealing", 3).
function sealKey(shared, ephemeralPublic, recipientEncryptionPublic, recipientAddress) {
  const domain = Buffer.concat([utf8('meganet-seal-v1'), recipientAddress]);
  return { key: hkdf(shared, Buffer.concat([ephemeralPublic, recipientEncryptionPublic]), domain), domain };
}

function seal(sender, recipient, content, contentType) {
  const sentUnixMs = Date.now();
  const digest = contentDigest(recipient.address, sender.address, sentUnixMs, contentType, '', content);
  const message = inner.encode(inner.fromObject({
    sender_signing_key: sender.signingPublic,
    sender_encryption_key: sender.encryptionPublic,
    sent_unix_ms: sentUnixMs,
    content_type: contentType,
    content,
    content_signature: Buffer.from(sodium.crypto_sign_detached(digest, sender.signingSecret)),
  })).finish();
  const size = CLASSES.find((c) => 4 + message.length <= c);
  if (size === undefined) throw new UsageError(`the message is ${message.length} bytes sealed; the largest size class is 64 KiB`);
  const padded = Buffer.alloc(size);
  padded.writeUInt32LE(message.length, 0);
  Buffer.from(message).copy(padded, 4);

  const ephemeralSecret = Buffer.from(sodium.randombytes_buf(32));
  const ephemeralPublic = Buffer.from(sodium.crypto_scalarmult_base(ephemeralSecret));
  const shared = Buffer.from(sodium.crypto_scalarmult(ephemeralSecret, recipient.encryptionPublic));
  const { key, domain } = sealKey(shared, ephemeralPublic, recipient.encryptionPublic, recipient.address);
  const nonce = Buffer.from(sodium.randombytes_buf(24));
  const ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, domain, null, nonce, key);
  return Buffer.concat([ephemeralPublic, nonce, Buffer.from(ciphertext)]);
}

function open(identity, envelope) {
  const sealed = envelope.sealed_payload;
  const ephemeralPublic = sealed.subarray(0, 32), nonce = sealed.subarray(32, 56);
  const shared = Buffer.from(sodium.crypto_scalarmult(identity.encryptionSecret, ephemeralPublic));
  const { key, domain } = sealKey(shared, ephemeralPublic, identity.encryptionPublic, identity.address);
  const padded = Buffer.from(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed.subarray(56), domain, nonce, key));
  const length = padded.readUInt32LE(0);
  if (length > padded.length - 4 || padded.subarray(4 + length).some((b) => b !== 0)) throw new Error('bad padding');
  const m = inner.toObject(inner.decode(padded.subarray(4, 4 + length)), { longs: String, bytes: Buffer, defaults: true });
  const signingKey = Buffer.from(m.sender_signing_key), encryptionKey = Buffer.from(m.sender_encryption_key);
  if (signingKey.length !== 32 || encryptionKey.length !== 32) throw new Error('sender keys are not 32 bytes');
  const sent = BigInt(m.sent_unix_ms);
  if (sent < 0n || sent > MAX_SENT_UNIX_MS) throw new Error(`the sending time (${m.sent_unix_ms} ms) is not a date`);
  const senderAddress = addressOf(signingKey, encryptionKey);
  const digest = contentDigest(identity.address, senderAddress, m.sent_unix_ms, m.content_type, m.file_name, Buffer.from(m.content));
  if (!sodium.crypto_sign_verify_detached(Buffer.from(m.content_signature), digest, signingKey)) throw new Error('the content signature does not verify');
  return { sender: cardText(signingKey, encryptionKey, senderAddress), sentUnixMs: m.sent_unix_ms, contentType: m.content_type, fileName: m.file_name, content: Buffer.from(m.content) };
}

// ---- envelopes (protocol.md, "Envelope") ----

function coreBytes(e) {
  return Buffer.concat([utf8('meganet-envelope-v1'), u32be(e.version), e.recipient, i64be(e.expires_unix_ms),
    blake2b256(e.sealed_payload), e.sending_key]);
}

// `core` when the caller has it: it hashes the whole sealed payload, and only the stamp changes between tries.
function signingBytes(e, core = coreBytes(e)) {
  return Buffer.concat([core, u32be(e.pow ? e.pow.bits : 0), u64be(e.pow ? e.pow.nonce : 0)]);
}

const envelopeId = (e) => blake2b256(signingBytes(e));

function leadingZeroBits(hash) {
  let bits = 0;
  for (const byte of hash) {
    if (byte === 0) { bits += 8; continue; }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

// A stamp is made for the node's seed (Status.pow_seed, or a refusal's pow-seed trailer): 16 bytes it draws anew every
// 10 minutes, so work cannot be done ahead and hoarded (docs/protocol.md).
function stamp(e, bits, core, seed) {
  if (!Number.isInteger(bits) || bits < 0 || bits > MAX_POW_BITS) {
    throw new Error(`the node asks for a ${bits}-bit proof-of-work stamp; this client pays for at most ${MAX_POW_BITS} bits (try later, or another node)`);
  }
  if (bits === 0) { delete e.pow; return; }
  if (!seed || seed.length !== 16) {
    throw new Error('the node asks for a proof-of-work stamp but gives no 16-byte seed to make it for: it speaks another version of the protocol');
  }
  const coreDigest = blake2b256(core);
  for (let nonce = 0n; ; nonce++) {
    const zeros = leadingZeroBits(blake2b256(utf8('meganet-pow-v2'), seed, coreDigest, u64be(nonce)));
    if (zeros >= bits) {
      e.pow = { bits: zeros, nonce: nonce.toString() }; // the node takes a stamp claiming exactly its zero bits
      return;
    }
  }
}

// Signs the envelope; returns its id (both over the same signing bytes).
function sign(e, sendingKey, core) {
  const signed = signingBytes(e, core);
  e.signature = Buffer.from(sodium.crypto_sign_detached(signed, sendingKey.secretKey));
  return blake2b256(signed);
}

// ---- transparency (protocol.md, "Receipts and tree heads"; RFC 9162) ----

const sha256 = (...parts) => createHash('sha256').update(Buffer.concat(parts)).digest();
// RFC 9162's interior node hash.
const NODE = Buffer.from([1]);
const nodeHash = (left, right) => sha256(NODE, left, right);

function verifyTreeHead(head, nodeId) {
  if (nodeId && !Buffer.from(head.node_key).equals(nodeId)) throw new Error('the tree head is signed by another key than the node id given');
  const signed = Buffer.concat([utf8('meganet-sth-v1'), u64be(head.tree_size), head.root_hash, u64be(head.timestamp_unix_ms)]);
  if (!sodium.crypto_sign_verify_detached(head.signature, signed, head.node_key)) throw new Error("the tree head's signature does not verify");
}

function verifyInclusion(leaf, index, size, path, root) {
  let fn = BigInt(index), sn = BigInt(size) - 1n;
  if (fn < 0n || fn > sn) return false;
  let r = sha256(Buffer.from([0]), leaf);
  for (const p of path) {
    if (sn === 0n || p.length !== 32) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n && r.equals(root);
}

// The root of the empty tree: every log extends it.
const EMPTY_ROOT = sha256();

// RFC 9162 §2.1.4.2: does the tree of size2 (root2) extend the tree of size1 (root1), by `path`? With the edge cases
// docs/protocol.md gives: equal sizes need equal roots and an empty path, a size-0 head must carry the empty root.
// Exported for the tests, which hold it to the C# verifier and to proofs with a byte flipped.
export function verifyConsistency(size1, size2, root1, root2, path) {
  let fn = BigInt(size1), sn = BigInt(size2);
  if (fn < 0n || sn < fn || root1.length !== 32 || root2.length !== 32 || path.length > 64 || path.some((p) => p.length !== 32)) return false;
  if (fn === 0n && !root1.equals(EMPTY_ROOT)) return false;
  if (fn === sn) return path.length === 0 && root1.equals(root2);
  if (fn === 0n) return path.length === 0;
  if (path.length === 0) return false;
  // When size1 is a power of two its root is where the proof starts, and the RFC puts it in front of the path.
  const hashes = (fn & (fn - 1n)) === 0n ? [root1, ...path] : path;
  let fr = hashes[0], sr = hashes[0];
  fn -= 1n; sn -= 1n;
  while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
  for (const c of hashes.slice(1)) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n && fr.equals(root1) && sr.equals(root2);
}

// ---- the node ----

// For a node whose TLS certificate the system does not trust (a self-signed one): exactly that certificate is also
// accepted, by its SHA-256 fingerprint, whatever name it carries (as the C# client's --tls-cert).
function credentialsFor(target, tlsCert) {
  if (target.protocol !== 'https:') {
    if (tlsCert) throw new UsageError('--tls-cert is for an https:// node');
    return grpc.credentials.createInsecure();
  }
  if (!tlsCert) return grpc.credentials.createSsl();
  const pem = readFileSync(tlsCert, 'utf8');
  const block = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/);
  if (!block) throw new UsageError(`--tls-cert ${tlsCert} holds no PEM certificate`);
  const pinned = new X509Certificate(block[0]).fingerprint256;
  // The system's authorities and the node's own certificate as roots; the name is checked unless the pin matches.
  return grpc.credentials.createSsl(Buffer.concat([Buffer.from(rootCertificates.join('\n') + '\n'), Buffer.from(block[0])]), null, null, {
    checkServerIdentity: (host, certificate) =>
      certificate.fingerprint256 === pinned ? undefined : checkServerIdentity(host, certificate),
  });
}

// How long each call waits for the node's answer by default: the C# client's (`meganet`'s --timeout, 30 s), so a node
// that takes a call and never answers (hung, or a half-open connection) ends the command with DEADLINE_EXCEEDED.
const DEFAULT_TIMEOUT_MS = 30_000;

// A duration as `meganet`'s --timeout takes it: a number with a unit, `s`, `m`, `h` or `d` (30s, 2m, 1.5h), above 0 and
// at most 30 days. In milliseconds.
function duration(text, option) {
  const match = /^([0-9]+(?:\.[0-9]+)?)(s|m|h|d)$/.exec(text);
  const ms = match ? Number(match[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2]] : NaN;
  if (!(ms >= 1 && ms <= 30 * 86_400_000)) throw new UsageError(`${option} is a duration with a unit, s, m, h or d (e.g. 30s, 2m), above 0 and at most 30 days, not '${printable(text)}'`);
  return ms;
}

function relay(url, tlsCert, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const definition = protoLoader.loadSync(['meganet/v1/relay.proto'], { includeDirs: [protos], keepCase: true, longs: String, defaults: true, oneofs: true });
  const Relay = grpc.loadPackageDefinition(definition).meganet.v1.Relay;
  const target = new URL(url);
  const credentials = credentialsFor(target, tlsCert);
  // HTTP/2 pings on a connection with a call open, as MegaNetClient's KeepAlivePingDelay and KeepAlivePingTimeout: a
  // subscription's connection that died without a word is closed (listen's watchdog needs two keepalives first).
  const client = new Relay(`${target.hostname}:${target.port || (target.protocol === 'https:' ? 443 : 80)}`, credentials,
    { 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 20_000 });
  // Every unary call is bounded (the subscription is not: it waits for mail, and listen's watchdog watches it).
  const call = (method, request) => new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + timeoutMs }, (error, response) => {
      if (error?.code === grpc.status.DEADLINE_EXCEEDED) error.details = `no answer from the node within ${timeoutMs / 1000} s (--timeout): ${error.details}`;
      return error ? reject(error) : resolve(response);
    }));
  const stream = (method, request) => client[method](request);
  return { call, stream, close: () => client.close() };
}

async function mailboxAuth(node, identity, nodeId, purpose) {
  const address = identity.address;
  const challenge = await node.call('Challenge', { address });
  // The signature is good only at the node it names: sign for the node we mean to talk to, never for whatever it says.
  if (!Buffer.from(challenge.node_id).equals(nodeId)) throw new Error(`the node's id is ${hex(challenge.node_id)}, not the one given with --node-id`);
  const signed = Buffer.concat([utf8('meganet-auth-v2'), challenge.nonce, nodeId, address, purpose]);
  return {
    address,
    nonce: challenge.nonce,
    identity_signing_key: identity.signingPublic,
    identity_encryption_key: identity.encryptionPublic,
    signature: Buffer.from(sodium.crypto_sign_detached(signed, identity.signingSecret)),
  };
}

// The node's Status, asked again after 1 and 2 s (as a submit is) when it went unanswered or the node was unavailable:
// a node restarting for a second or two failed the send at once. Status stores nothing, so asking again is safe.
async function statusBeforeSealing(node) {
  for (let tries = 0; ; tries++) {
    try {
      return await node.call('Status', {});
    } catch (error) {
      if ((error.code !== grpc.status.DEADLINE_EXCEEDED && error.code !== grpc.status.UNAVAILABLE) || tries >= MAX_RESUBMITS) throw error;
      await new Promise((resolve) => setTimeout(resolve, (tries + 1) * 1000));
    }
  }
}

async function send(node, sender, recipient, text, nodeId) {
  const status = await statusBeforeSealing(node);
  // A week, or a little under the node's maximum where that is shorter (a clock ahead of the node's is no refusal).
  const maxTtl = Number(status.limits.max_ttl_seconds);
  const ttlSeconds = Math.min(7 * 86400, maxTtl > 7200 ? maxTtl - 3600 : Math.floor(maxTtl / 2));
  const sendingKey = sendingKeyFor(sender, recipient.address);
  const envelope = {
    version: 1,
    recipient: recipient.address,
    expires_unix_ms: String(Date.now() + ttlSeconds * 1000),
    sealed_payload: seal(sender, recipient, utf8(text), TEXT),
    sending_key: sendingKey.publicKey,
  };
  const core = coreBytes(envelope);
  const { id, receipt } = await submit(node, envelope, sendingKey, core, status.pow_bits_required, status.pow_seed && Buffer.from(status.pow_seed));
  // The node holds the message from here on: a check that fails says so, and as which envelope. Told only the failure,
  // a person sends it again, sealed anew with a new sending time, which the recipient cannot tell from a copy of the
  // first: delivered twice.
  try {
    verifyTreeHead(receipt.tree_head, nodeId);
    if (!nodeId) console.error(`note: the receipt is signed by ${hex(receipt.tree_head.node_key)}; pass --node-id to check that this is the node you mean`);
    const proof = await node.call('GetInclusionProof', { leaf_index: receipt.log_index, tree_size: receipt.tree_head.tree_size });
    if (!verifyInclusion(id, receipt.log_index, receipt.tree_head.tree_size, proof.path.map((p) => Buffer.from(p)), Buffer.from(receipt.tree_head.root_hash))) {
      throw new Error("the inclusion proof does not lead to the tree head's root");
    }
  } catch (error) {
    const failed = isGrpcError(error) ? `could not be checked (${describe(error)})` : `does not check: ${error.message}`;
    throw Object.assign(new Error(`sent as envelope ${hex(id)}, but its receipt ${failed}; the node accepted the message, so sending it again would deliver it twice`),
      { exitCode: isGrpcError(error) ? 2 : 1 });
  }
  return { envelope_id: hex(id), log_index: Number(receipt.log_index), tree_size: Number(receipt.tree_head.tree_size), duplicate: receipt.duplicate, pow_bits: envelope.pow ? envelope.pow.bits : 0 };
}

// Submits of one envelope made again, at most, when its answer may have been lost (MegaNetClient's MaxResubmits).
const MAX_RESUBMITS = 2;

// Stamps and submits `envelope`; returns its id and the node's receipt, checked to name it. A node that asks for a
// stamp (FAILED_PRECONDITION with pow-bits and pow-seed trailers: the node, or the recipient's nearly full mailbox;
// also a stamp for a seed the node has since turned) gets one for the seed it names, twice at most. A submit that got no answer in time (DEADLINE_EXCEEDED) or no node (UNAVAILABLE) is made again with the
// same envelope, twice at most, after 1 and 2 s: a node that stored it answers with the original receipt, where the
// message sent again would be a second copy. From then on the envelope is never stamped anew (another envelope, while
// the first may be stored), and a failure names it, as MegaNetClient's send does. (grpc-js does not tell a transport's
// UNAVAILABLE from a node's own, which stored nothing: both count as unanswered.)
async function submit(node, envelope, sendingKey, core, bits, seed) {
  let restamps = 0, resubmits = 0;
  stamp(envelope, bits, core, seed);
  let id = sign(envelope, sendingKey, core);
  for (;;) {
    let receipt;
    try {
      receipt = await node.call('Submit', { envelope });
    } catch (error) {
      const wanted = error.code === grpc.status.FAILED_PRECONDITION && error.metadata?.get('pow-bits')[0];
      const wantedSeed = wanted && error.metadata.get('pow-seed')[0];
      if (wanted && resubmits === 0 && restamps < 2) {
        restamps++;
        stamp(envelope, Number(wanted), core, typeof wantedSeed === 'string' && /^[0-9a-f]{32}$/.test(wantedSeed) ? Buffer.from(wantedSeed, 'hex') : undefined);
        id = sign(envelope, sendingKey, core);
        continue;
      }
      if ((error.code === grpc.status.DEADLINE_EXCEEDED || error.code === grpc.status.UNAVAILABLE) && resubmits < MAX_RESUBMITS) {
        resubmits++;
        await new Promise((resolve) => setTimeout(resolve, resubmits * 1000));
        continue;
      }
      if (resubmits > 0) {
        error.details = `${error.details} (a submit of this message got no answer: the node may have stored it as envelope ${hex(id)}, so sending it again may deliver it twice)`;
      }
      throw error;
    }
    if (!Buffer.from(receipt.envelope_id).equals(id)) {
      throw new Error(`the node's receipt names envelope ${hex(receipt.envelope_id)}, not the one sent (${hex(id)}): the node is faulty; do not count this as delivered`);
    }
    // After a resubmit, a copy is of this client's own unanswered submit, not of an earlier send.
    if (resubmits > 0) receipt.duplicate = false;
    return { id, receipt };
  }
}

// ---- monitoring the log (protocol.md, "Monitoring the log"; as `meganet audit`) ----

// A receipt holds the node to one head; an audit holds it to its history. The newest head checked is remembered per
// node id, and each audit asks the node for its current head and a consistency proof from the remembered one: a node
// that lost or rewrote its log, or shows another log to someone else (a fork), cannot prove that it extends what it
// signed before, and the two signed heads are the evidence.

// The answers to a proof request that are no outage: the node signed both sizes, so it holds both trees, and a
// refusal is an answer (MegaNetClient.IsRefusal). Other errors may pass and end the command with exit code 2.
const REFUSALS = ['INVALID_ARGUMENT', 'OUT_OF_RANGE', 'NOT_FOUND', 'FAILED_PRECONDITION', 'UNIMPLEMENTED', 'DATA_LOSS'].map((name) => grpc.status[name]);

// A head as `meganet audit --json` writes it, and as the heads file holds it.
const headJson = (h) => ({ tree_size: Number(h.tree_size), root_hash: hex(h.root_hash), timestamp_unix_ms: Number(h.timestamp_unix_ms), node_key: hex(h.node_key), signature: hex(h.signature) });

// The heads file: a JSON object of heads by node id; none yet when the file is not there.
function readHeads(path) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (error.code === 'ENOENT') return {};
    throw error;
  }
  let heads;
  try {
    heads = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${path} is not a file of tree heads (${error.message}); move it aside`);
  }
  if (heads === null || typeof heads !== 'object' || Array.isArray(heads)) throw new UsageError(`${path} is not a file of tree heads (a JSON object by node id); move it aside`);
  return heads;
}

// The head remembered for `nodeId`, refused unless it verifies with that key: treating a damaged entry as none would
// make this a first audit and accept whatever log the node shows now.
function rememberedHead(entry, nodeId, where) {
  const damaged = (what) => new UsageError(`${where} ${what}; move the file aside (or delete that entry to start this node's audits anew)`);
  const bytes = (name, length) => {
    if (typeof entry?.[name] !== 'string' || !new RegExp(`^[0-9a-fA-F]{${2 * length}}$`).test(entry[name])) throw damaged(`is not a tree head (its ${name})`);
    return Buffer.from(entry[name], 'hex');
  };
  const count = (name) => {
    if (!Number.isSafeInteger(entry?.[name]) || entry[name] < 0) throw damaged(`is not a tree head (its ${name})`);
    return entry[name];
  };
  const head = { tree_size: count('tree_size'), root_hash: bytes('root_hash', 32), timestamp_unix_ms: count('timestamp_unix_ms'), node_key: bytes('node_key', 32), signature: bytes('signature', 64) };
  if (hex(head.node_key) !== nodeId) throw damaged(`holds a head of another node (${hex(head.node_key)})`);
  try {
    verifyTreeHead(head);
  } catch {
    throw damaged("holds a head whose signature does not verify with its node key: the file is damaged or the head was altered");
  }
  return head;
}

// The heads file's lock, as `meganet audit`'s LockedFile: `FILE.lock` beside it, held from reading the file to saving
// it (never while the node answers), so two audits at once (cron lines overlapping) do not lose one's head. Node.js has
// no advisory file lock, so the lock is the file itself, made with O_EXCL, holding its maker's pid, and deleted when let
// go. One held by a running process is waited for, 100 ms between tries, up to 30 s (a save takes milliseconds), as
// LockedFile waits; one whose maker is no longer running was left by an audit killed while saving: named, to be
// deleted by hand (deleting it here could delete a lock another audit has just taken). Resolves to the function that
// lets it go.
const LOCK_RETRY_MS = 100;
const LOCK_WAIT_MS = 30_000;
async function lockHeads(path) {
  const lock = `${path}.lock`;
  const failed = (why) => new Error(`the head could not be remembered in ${path}: ${why}`);
  for (const started = Date.now(); ;) {
    try {
      const fd = openSync(lock, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      return () => rmSync(lock, { force: true });
    } catch (error) {
      if (error.code !== 'EEXIST') throw failed(error.message);
    }
    let holder = null;
    try {
      const text = readFileSync(lock, 'utf8');
      holder = /^[0-9]+\n$/.test(text) ? Number.parseInt(text, 10) : null;
    } catch {
      // Let go meanwhile, or still being written: try again.
    }
    if (holder !== null && !running(holder)) {
      throw failed(`${lock} was left by process ${holder}, which is no longer running (an audit that was killed while saving): delete it and audit again`);
    }
    if (Date.now() - started >= LOCK_WAIT_MS) {
      throw failed(`${lock} stayed locked for ${LOCK_WAIT_MS / 1000} s: another audit${holder === null ? '' : ` (process ${holder})`} is using it`);
    }
    await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
  }
}

// Whether a process with this pid runs on this machine (one of another user's counts: signalling it is refused).
function running(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

// Whole or not at all: written beside the file, flushed, and renamed over it, so a crash leaves the old file or the
// new, never one cut short that would lose every node's head.
function saveHeads(path, heads) {
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    const fd = openSync(temporary, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(heads, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new Error(`the head could not be remembered in ${path}: ${error.message}`);
  }
}

// Null when the node proves that `current` extends `earlier` (both signed by it, checked before), else what failed,
// in `meganet audit`'s words.
async function logProblem(node, earlier, current) {
  const size1 = Number(earlier.tree_size), size2 = Number(current.tree_size);
  // Before any proof request: the node cannot prove anything about a tree larger than its log.
  if (size2 < size1) return `the node's log has ${size2} entries now, fewer than the ${size1} it signed in the earlier head: it lost or rewrote its log`;
  // Equal sizes need equal roots and every tree extends the empty one: no proof to ask for (docs/protocol.md).
  let path = [];
  if (size1 !== size2 && size1 !== 0) {
    try {
      path = (await node.call('GetConsistencyProof', { first: size1, second: size2 })).path.map((p) => Buffer.from(p));
    } catch (error) {
      if (!REFUSALS.includes(error.code)) throw error;
      if (error.code === grpc.status.DATA_LOSS) {
        // No refusal of the proof: the node says it lost what it signed, and only its operator can mend that.
        return `the node cannot give a consistency proof between two sizes it signed, ${size1} and ${size2}: it says its store is damaged, ` +
          `so its log cannot be checked until its operator restores the store (${grpc.status[error.code]}: ${printable(error.details)})`;
      }
      return `the node refused a consistency proof between two sizes it signed, ${size1} and ${size2} (${grpc.status[error.code]}: ${printable(error.details)})`;
    }
  }
  return verifyConsistency(size1, size2, earlier.root_hash, Buffer.from(current.root_hash), path)
    ? null
    : `the node's current log (size ${size2}) does not extend the log of the earlier head (size ${size1}): it forked or rewrote its log`;
}

// Whether two heads are one signed head (null for none): the same size, root and signature.
const sameHead = (a, b) => (a === null || b === null)
  ? a === b
  : Number(a.tree_size) === Number(b.tree_size) && hex(a.root_hash) === hex(b.root_hash) && hex(a.signature) === hex(b.signature);

// The head of node `id` in a heads file's contents `heads`, or null.
const savedHead = (heads, id, headsPath) => (heads[id] === undefined ? null : rememberedHead(heads[id], id, `${headsPath} (${id})`));

// Saves `current` as the head of node `id` only while the file still holds the head it was proved to extend (`heldTo`,
// first the head this audit read; null for none). The file is read again just before saving, so an audit of another
// node meanwhile keeps its head; a head of this node another audit saved meanwhile was proved only against what that
// audit read, so it is never written over unchecked: a larger one stays (the next audit is held to it), a smaller one
// or one of the same size is checked like the head read (a head of another log is a fork, with both signed heads as
// evidence), and `current` is saved over it only once proved to extend it. The reading and the saving are done under
// the file's lock (lockHeads), so no other audit saves in between; a proof is asked for with the lock let go.
// Returns { remembered } or, for a fork, { problem, earlier } (the head it forks from).
async function remember(node, headsPath, id, heldTo, current) {
  for (let attempt = 1; attempt <= 3; attempt++) {
    let saved;
    const unlock = await lockHeads(headsPath);
    try {
      const latest = readHeads(headsPath);
      saved = savedHead(latest, id, headsPath);
      if (sameHead(saved, heldTo)) {
        latest[id] = { ...headJson(current), audited_unix_ms: Date.now() };
        saveHeads(headsPath, latest);
        return { remembered: true };
      }
    } finally {
      unlock();
    }
    // Another audit saved meanwhile (or the entry was deleted, which starts this node's audits anew).
    if (sameHead(saved, current)) return { remembered: true };
    if (saved !== null && saved.tree_size > Number(current.tree_size)) {
      console.error(`note: not remembered: another audit remembered a larger head of node ${id} (size ${saved.tree_size}) in ${headsPath} meanwhile; the next audit is held to it`);
      return { remembered: false };
    }
    if (saved !== null) {
      const problem = await logProblem(node, saved, current);
      if (problem !== null) return { remembered: false, problem: `${problem} (the earlier head is the one another audit remembered in ${headsPath} meanwhile)`, earlier: saved };
    }
    heldTo = saved;
  }
  console.error(`note: not remembered: other audits kept changing the head of node ${id} in ${headsPath}; run the audit again`);
  return { remembered: false };
}

// Prints `meganet audit --json`'s report (node, node_id, consistent, problem, earlier, current, remembered). A node
// that fails the check leaves the remembered head as it was, as evidence, and the command exits 3.
async function audit(node, url, nodeId, headsPath) {
  const heads = readHeads(headsPath);
  const current = await node.call('GetTreeHead', {});
  const id = hex(current.node_key);
  // Which node this is, settled before any log is compared: another id is a mistake to fix, not evidence.
  if (nodeId && hex(nodeId) !== id) throw new Error(`the node at ${url} signs its log with ${id}, not with the node id given (${hex(nodeId)}); nothing was compared`);
  const earlier = savedHead(heads, id, headsPath);
  let problem = null;
  try {
    verifyTreeHead(current);
  } catch {
    problem = "the node's current tree head does not verify with its own key";
  }
  if (problem === null && earlier !== null) problem = await logProblem(node, earlier, current);

  const report = { node: url, node_id: id, consistent: problem === null, problem, earlier: earlier && headJson(earlier), current: headJson(current), remembered: false };
  let saveError = null;
  if (problem === null) {
    try {
      const saving = await remember(node, headsPath, id, earlier, current);
      report.remembered = saving.remembered;
      if (saving.problem) {
        problem = saving.problem;
        Object.assign(report, { consistent: false, problem, earlier: headJson(saving.earlier) });
      }
    } catch (error) {
      // Told after the report: the finding stands whatever the disk does (as `meganet audit`).
      saveError = error;
    }
    if (report.remembered && earlier === null && !nodeId) console.error(`note: first audit of node ${id}, remembered as the key signs it now; pass --node-id to check that this is the node you mean`);
  }
  await writeOut(jsonLine(report));
  if (saveError !== null) throw saveError;
  if (problem !== null) {
    console.error(`meganet.mjs: INVALID: ${problem}${report.earlier ? `. The remembered head stays in ${headsPath}` : ''} (the report on standard output holds the heads)`);
    process.exitCode = 3;
  }
}

// Files larger than one envelope come as parts (docs/protocol.md, "Files larger than one envelope"). This client keeps
// them in memory until every part of a file has come (in one fetch, or while listening) and then shows the file once;
// `fetch --ack` leaves the parts of a file still incomplete on the node, for a later fetch.
const PART_TYPE = 'application/vnd.meganet.file-part';
const PART_HEADER = 64;
const MAX_PARTS = 1024;
const MAX_FILE = 32 * 1024 * 1024;

// The slice each part of a file of this name carries, the last one excepted (FileParts.SliceLength): the largest
// class's content length for a part less the header, the sealed content's other fields counted at their largest.
function sliceLength(fileName) {
  const fields = inner.encode(inner.fromObject({
    sender_signing_key: Buffer.alloc(32),
    sender_encryption_key: Buffer.alloc(32),
    sent_unix_ms: String(MAX_SENT_UNIX_MS),
    content_type: PART_TYPE,
    file_name: fileName,
    content_signature: Buffer.alloc(64),
  })).finish().length;
  // The length prefix, then the content's tag and its length varint (3 bytes for the largest class).
  return CLASSES[CLASSES.length - 1] - 4 - fields - 1 - 3 - PART_HEADER;
}

const thousands = (n) => n.toLocaleString('en-US');

// What is wrong with a part of `slice` bytes whose file of that name is not cut as docs/protocol.md says (every slice
// but the last a full sliceLength, so the length makes the count), in ReceivedParts.CutProblem's words; else null. A
// header, length and hash that merely hold let a part of a few bytes claim a file of its own.
function cutProblem(index, parts, length, slice, fileName) {
  const full = sliceLength(fileName);
  if (full < 1) return 'its name leaves no room for any of the file';
  const made = Math.max(1, Math.ceil(length / full));
  const expected = index < parts - 1 ? full : length - (parts - 1) * full;
  if (made !== parts) return `a file of ${thousands(length)} bytes under that name is cut into ${thousands(made)} part(s) of ${thousands(full)} bytes, not ${thousands(parts)}`;
  return slice === expected ? null : `it holds ${thousands(slice)} bytes of the file, where part ${index + 1} of ${parts} holds ${thousands(expected)}`;
}

class Parts {
  constructor() {
    this.files = new Map();
    this.shown = new Set(); // files shown in this run: a part of one that comes again is a copy
  }

  // What became of `m` (an opened part) from mailbox entry `seq`: { file, seqs } when it completes a file (the seqs of
  // all its parts), { seqs: [] } while the file waits for more, { copy: true, seqs } for a part of a file shown already
  // or one sent again with the same contents. Throws, with the entries to acknowledge in `error.seqs`, for a part that
  // cannot be used; a set that does not make its file takes all its parts with it, as the C# client drops them.
  add(m, seq) {
    const c = m.content;
    const refuse = (message, seqs = [seq]) => { throw Object.assign(new Error(message), { seqs }); };
    const name = printable(m.fileName); // the sender's choice, shown in messages
    if (c.length < PART_HEADER) refuse(`a file part of ${c.length} bytes is shorter than its ${PART_HEADER}-byte header`);
    const index = c.readUInt32BE(16), count = c.readUInt32BE(20), length = c.readBigUInt64BE(24), hash = c.subarray(32, PART_HEADER);
    if (count < 1 || count > MAX_PARTS || index >= count || length > BigInt(MAX_FILE) || BigInt(c.length - PART_HEADER) > length) {
      refuse(`a file part with an impossible header (part ${index + 1} of ${count}, ${length} bytes)`);
    }
    const cut = cutProblem(index, count, Number(length), c.length - PART_HEADER, m.fileName);
    if (cut) refuse(`part ${index + 1} of file '${name}' is not cut as the protocol says: ${cut}`);
    // Keyed by the sender too: a part from anyone else cannot join this sender's file.
    const key = `${m.sender} ${c.subarray(0, 16).toString('hex')}`;
    if (this.shown.has(key)) return { copy: true, seqs: [seq] };
    let file = this.files.get(key);
    if (!file) this.files.set(key, (file = { count, length, hash, name: m.fileName, slices: new Map(), seqs: [] }));
    if (file.count !== count || file.length !== length || !file.hash.equals(hash) || file.name !== m.fileName) {
      refuse(`part ${index + 1} of file '${name}' does not match the parts of that file received before (another count, length, hash or name)`);
    }
    const slice = c.subarray(PART_HEADER);
    if (file.slices.has(index)) {
      if (!file.slices.get(index).equals(slice)) refuse(`part ${index + 1} of file '${name}' came twice with different contents`);
      file.seqs.push(seq); // the same part again (a resend): acknowledged with the file
      return { seqs: [] };
    }
    file.seqs.push(seq);
    file.slices.set(index, slice);
    if (file.slices.size < count) return { seqs: [] };
    this.files.delete(key);
    const whole = Buffer.concat([...Array(count).keys()].map((i) => file.slices.get(i)));
    if (BigInt(whole.length) !== length || !blake2b256(whole).equals(hash)) {
      refuse(`file '${name}' in ${count} parts: the parts do not make the file they announce; its parts were dropped`, file.seqs);
    }
    this.shown.add(key);
    return { file: { content: whole, count, id: c.subarray(0, 16).toString('hex') }, seqs: file.seqs };
  }

  // The files still missing parts, for a line on stderr.
  waiting() {
    return [...this.files.values()].map((f) => `${f.slices.size} of ${f.count} parts of file '${printable(f.name)}'`);
  }
}

// One mailbox item as the JSON object `meganet fetch --json` prints (the same keys, so a script reads either client),
// or, for mail that does not open (anyone can seal junk to an address), why not. `line` is null for a part of a file
// not yet whole (and for a copy of a part); `seqs` are the mailbox entries to acknowledge for it (all of a file's parts
// once it is whole, none while it waits).
function messageLine(identity, item, parts) {
  const e = item.envelope;
  const id = envelopeId(e);
  if (!id.equals(Buffer.from(item.envelope_id))) throw new Error(`message ${item.seq}: the node's envelope id is not the envelope's`);
  const seq = Number(item.seq);
  try {
    const m = open(identity, e);
    const head = { seq, id: id.toString('hex'), sender: m.sender, timestamp_unix_ms: Number(m.sentUnixMs), log_index: Number(item.log_index) };
    if (m.contentType === PART_TYPE) {
      const { file, seqs } = parts.add(m, seq);
      if (!file) return { line: null, seqs };
      // `file_id` (with the sender) names the file whichever part made it whole; seq, id and time are that part's.
      const counted = file.count > 1 ? { parts: file.count, file_id: file.id } : {};
      return { line: { ...head, file_name: m.fileName, file_length: file.content.length, file_base64: file.content.toString('base64'), ...counted }, seqs };
    }
    const body = m.contentType.startsWith('text/') ? { text: m.content.toString('utf8') } : { file_name: m.fileName, file_length: m.content.length, file_base64: m.content.toString('base64') };
    return { line: { ...head, ...body }, seqs: [seq] };
  } catch (error) {
    return { line: { seq, id: id.toString('hex'), unreadable: error.message }, seqs: error.seqs ?? [seq] };
  }
}

// Writes `text` to standard output and resolves once it went through, or throws, saying what became of the mail
// (`consequence`, when there is something to say): console.log drops write errors (a reader that went away, EPIPE),
// so a command whose output nobody got would end as if it had been read, `listen` would never end, and `fetch --ack`
// would delete what nobody got. Every command writes its output here. With `durable` and standard output a file, the
// file is flushed to the disk as well, as `meganet fetch --ack` does.
process.stdout.on('error', () => {}); // reported through the write's callback instead
async function writeOut(text, durable = false, consequence = undefined) {
  try {
    await new Promise((resolve, reject) => process.stdout.write(text, (error) => (error ? reject(error) : resolve())));
    if (durable && fstatSync(1).isFile()) fsyncSync(1);
  } catch (error) {
    throw new Error(`cannot write to standard output (${error.message})${consequence ? `; ${consequence}` : ''}`);
  }
}

// A mailbox entry the node's store no longer reads back (docs/protocol.md): `Fetch` and `Subscribe` end with DATA_LOSS
// and the trailer `damaged-seq`, its seq in decimal, once the mail before it was delivered; the mail after it comes from
// `after_seq` of that seq. Returns that seq (a string, as this client keeps seqs) when `error` is such an answer to a
// call from `after`, null for any other error. A trailer that is no decimal sequence number, or none past `after`,
// is a protocol error: going on from it would ask for the same mail again without end, so it is refused, the node's
// words escaped.
const DAMAGED_SEQ = 'damaged-seq';
const MAX_SEQ = (1n << 64n) - 1n;
function damagedSeq(error, after) {
  if (!isGrpcError(error) || error.code !== grpc.status.DATA_LOSS) return null;
  const values = error.metadata?.get(DAMAGED_SEQ) ?? [];
  if (values.length === 0) return null;
  const text = values.length === 1 ? String(values[0]) : values.map(String).join(', ');
  if (values.length !== 1 || !/^[0-9]{1,20}$/.test(text) || BigInt(text) > MAX_SEQ || BigInt(text) <= BigInt(after)) {
    throw Object.assign(new Error(`the node answered DATA_LOSS (${describe(error)}) naming as the damaged entry '${printable(text)}', which is no mailbox ` +
      `sequence number after ${after}, the one asked from: a protocol error (going on from it would ask for the same mail again); nothing was acknowledged`), { exitCode: 2 });
  }
  return BigInt(text).toString();
}

// The line for an entry the node could not deliver because its store is damaged, as `meganet` words it.
const couldNotDeliver = (seq, error, then) =>
  `meganet.mjs: the message at seq ${seq} could not be delivered: the node's store is damaged (${describe(error)}); it stays on the node, not acknowledged; ${then}.`;

async function fetch(node, identity, nodeId, ack, from) {
  const messages = [];
  const seqs = [];
  const damaged = [];
  const parts = new Parts();
  for (let after = from; ;) {
    let page;
    try {
      page = await node.call('Fetch', { auth: await mailboxAuth(node, identity, nodeId, Buffer.from([1])), after_seq: after, limit: 100 });
    } catch (error) {
      const seq = damagedSeq(error, after);
      if (seq === null) throw error;
      // Named once, never acknowledged, and the mail after it still comes: before, the fetch ended here.
      console.error(couldNotDeliver(seq, error, 'fetching the mail after it'));
      damaged.push(seq);
      after = seq;
      continue;
    }
    if (page.items.length === 0) break;
    for (const item of page.items) {
      const m = messageLine(identity, item, parts);
      seqs.push(...m.seqs);
      if (m.line) messages.push(m.line);
    }
    after = page.next_cursor;
  }
  await writeOut(messages.map(jsonLine).join(''), ack, ack ? 'no message was acknowledged' : undefined);
  for (const w of parts.waiting()) console.error(`${w} here; left on the node until the rest come`);
  if (ack && seqs.length > 0) {
    let deleted = 0;
    for (let start = 0; start < seqs.length; start += MAX_ACK_SEQS) {
      const chunk = seqs.slice(start, start + MAX_ACK_SEQS);
      const list = Buffer.concat(chunk.map((s) => u64be(s)));
      // A challenge a call: the signature names these sequence numbers and no others.
      const auth = await mailboxAuth(node, identity, nodeId, Buffer.concat([Buffer.from([3]), blake2b256(list)]));
      deleted += (await node.call('Ack', { auth, seqs: chunk })).deleted;
    }
    console.error(`acknowledged ${deleted} message(s)`);
  }
  if (damaged.length > 0) {
    // The rest was shown (and acknowledged), but not all of the mailbox: a script must not take this for a complete
    // fetch. `meganet fetch`'s line and exit code.
    console.error(`meganet.mjs: ${damaged.length} message(s) could not be delivered because the node's store is damaged (seq ${damaged.join(', ')}); ` +
      'they stay on the node, and a later fetch gets them once its operator has restored the store.');
    process.exitCode = 2;
  }
}

// Mail as it arrives (and what already waits after `after`), one JSON line each. The node sends a keepalive as soon
// as the subscription is registered: that is when "subscribed" goes to stderr. Ends after `count` messages when given,
// else when the node ends the stream (an error says why), on Ctrl+C, or when a line cannot be written (a reader that
// went away, `| head -1`: the subscription is cancelled and the command fails). The node ends every subscription after
// its lifetime (SubscriptionLifetimeSeconds, an hour by default) with UNAVAILABLE and the trailer
// `subscription-ended: lifetime`: a subscription that had begun is then renewed at once, with a fresh challenge, after
// the last item read, without a word (at most once a second, so a node that ends each at once gets no loop). An entry
// the node's store no longer reads back (DATA_LOSS with `damaged-seq`) is named once on stderr, and listening goes on
// after it at once (damagedSeq refuses a seq that would not move the cursor on).
// A connection can die without a packet saying so: as MegaNetClient's ListenAsync, the node's keepalive interval
// (KeepaliveSeconds, 15 s by default, not announced) is taken as the longest gap between two keepalives in a row by
// their stamps, and once it is known, no event within 3 intervals and 2 s ends listen with exit code 2 (nothing is
// lost: --after the last item read goes on). Before that, HTTP/2 pings find a dead connection (relay()).
async function listen(node, identity, nodeId, after, count) {
  // `interval`: the node's keepalive interval in ms as far as seen, 0 until known; kept across renewals.
  const state = { cursor: after, seen: 0, subscribed: false, parts: new Parts(), interval: 0 };
  for (;;) {
    const opened = Date.now();
    const renew = await subscribeOnce(node, identity, nodeId, count, state);
    if (renew === false) return;
    // After a damaged entry the cursor moved past it, so no loop: at once. Else at most once a second.
    if (renew === RENEW) await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1000 - (Date.now() - opened))));
  }
}

// How subscribeOnce says a subscription is to be renewed: after the node ended it for its lifetime (at most once a
// second), or after an entry the node could not deliver, with the cursor past it (at once).
const RENEW = 'renew';
const RENEW_AT_ONCE = 'renew at once';

// One Subscribe call of `listen`, from `state.cursor`; resolves RENEW or RENEW_AT_ONCE when it is to be renewed, false
// when listening is over.
async function subscribeOnce(node, identity, nodeId, count, state) {
  const auth = await mailboxAuth(node, identity, nodeId, Buffer.from([2]));
  return new Promise((resolve, reject) => {
    const stream = node.stream('Subscribe', { auth, after_seq: state.cursor });
    let begun = false, ended = false, watchdog, previousKeepalive = null;
    // Once: cancelling a call that has ended already does nothing.
    const end = (error, renew = false) => {
      if (ended) return;
      ended = true;
      clearTimeout(watchdog);
      stream.cancel();
      if (error) reject(error); else resolve(renew);
    };
    // The stream's events one at a time, in order: a line is written out before the next event is looked at, and
    // nothing is looked at after the end (a line that could not be written, the last one wanted).
    let queue = Promise.resolve();
    const next = (step) => { queue = queue.then(() => (ended ? undefined : step())).catch(end); };
    // The node's silence ends the subscription: the watchdog is wound up again at every event as it arrives (time
    // spent writing lines out is not the node's), once the interval is known.
    const watch = () => {
      clearTimeout(watchdog);
      if (state.interval === 0 || ended) return;
      const wait = 3 * state.interval + 2000;
      watchdog = setTimeout(() => next(() => end(Object.assign(new Error(`no mail and no keepalive from the node for ${wait / 1000} s, though it sends ` +
        `a keepalive about every ${state.interval / 1000} s when idle: the connection or the node is dead; nothing was lost: listen again with ` +
        `--after ${state.cursor}`), { exitCode: 2 }))), wait);
    };
    watch();
    stream.on('data', (event) => {
      if (event.kind === 'item') {
        previousKeepalive = null;
      } else {
        // Two keepalives in a row are one interval apart by the node's clock, whenever they were read here; a gap
        // beyond a day is a clock step.
        const sent = Number(event.keepalive_unix_ms), gap = sent - (previousKeepalive ?? sent);
        if (gap > 0 && gap <= 86_400_000) state.interval = Math.max(state.interval, gap);
        previousKeepalive = sent;
      }
      watch();
      next(async () => {
        begun = true;
        if (event.kind !== 'item') {
          if (!state.subscribed) console.error('subscribed');
          state.subscribed = true;
          return;
        }
        const m = messageLine(identity, event.item, state.parts);
        state.cursor = event.item.seq; // a part still waiting for the rest is kept in `parts`, not asked for again
        if (!m.line) return;
        await writeOut(jsonLine(m.line), false, 'stopped listening');
        if (count !== undefined && ++state.seen >= count) end();
      });
    });
    stream.on('error', (error) => next(() => {
      // CANCELLED is the node's reset (HTTP/2 CANCEL): this side cancels only after `ended`, when nothing is looked at.
      // The node gives up so on mail this client has not read, at a subscription's lifetime end or 5 s into its stop:
      // renewed as a lifetime end is (a stopped node then refuses the renewal, which says so). It ended listen as done.
      if (begun && error.code === grpc.status.CANCELLED) end(undefined, RENEW);
      else if (begun && error.code === grpc.status.UNAVAILABLE && error.metadata?.get('subscription-ended')[0] === 'lifetime') end(undefined, RENEW);
      else {
        // An entry the node's store no longer reads back: named once, never acknowledged (this client acknowledges
        // nothing while listening), and listening goes on after it (damagedSeq throws for a seq that does not move on).
        const seq = damagedSeq(error, state.cursor);
        if (seq === null) {
          end(error);
          return;
        }
        console.error(couldNotDeliver(seq, error, 'listening goes on after it'));
        state.cursor = seq;
        end(undefined, RENEW_AT_ONCE);
      }
    }));
    stream.on('end', () => next(() => end()));
  });
}

// ---- command line ----

const OPTIONS = { '-i': 'identity', '--identity': 'identity', '--to': 'to', '--text': 'text', '--node': 'node', '--node-id': 'nodeId', '--after': 'after', '--count': 'count', '--tls-cert': 'tlsCert', '--heads': 'heads', '--timeout': 'timeout' };

// What each command takes: an option it has no use for is refused rather than ignored.
const TAKES = {
  status: ['node', 'tlsCert', 'timeout'],
  send: ['identity', 'to', 'text', 'node', 'nodeId', 'tlsCert', 'timeout'],
  fetch: ['identity', 'node', 'nodeId', 'after', 'ack', 'tlsCert', 'timeout'],
  listen: ['identity', 'node', 'nodeId', 'after', 'count', 'tlsCert', 'timeout'],
  // -i only says where the heads file is kept by default: beside the identity file.
  audit: ['identity', 'heads', 'node', 'nodeId', 'tlsCert', 'timeout'],
};

// Not `meganet audit`'s tree-heads.json (heads by node address), which may sit beside the same identity file.
const HEADS_FILE = 'tree-heads-by-node-id.json';

function options(args) {
  const named = {};
  const flags = { ack: '--ack', help: '--help' };
  const positional = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--ack') named.ack = true;
    else if (a === '-h' || a === '--help') named.help = true;
    else if (a.startsWith('-')) {
      if (i + 1 >= args.length) throw new UsageError(`${a} needs a value`);
      named[OPTIONS[a] ?? fail(a)] = args[++i];
      flags[OPTIONS[a]] = a;
    } else positional.push(a);
  }
  return { named, positional, flags };
}

function fail(option) {
  throw new UsageError(`unknown option ${option}`);
}

const USAGE = 'usage: meganet.mjs id new FILE | id show FILE | status | send -i FILE --to CARD --text TEXT [--node-id HEX]'
  + ' | fetch -i FILE --node-id HEX [--after SEQ] [--ack] | listen -i FILE --node-id HEX [--after SEQ] [--count N]'
  + ` | audit [--node-id HEX] (--heads FILE | -i FILE: the heads in ${HEADS_FILE} beside it)`
  + '  (each but id with [--node URL], default http://127.0.0.1:7700, [--tls-cert FILE] for an https:// node with a self-signed certificate,'
  + ' and [--timeout DURATION], how long each call waits for the node\'s answer, default 30s; listen\'s subscription itself waits for mail)';

async function main(argv) {
  const [command, ...rest] = argv;
  const { named, positional, flags } = options(rest);
  if (named.help || command === '-h' || command === '--help' || command === undefined) {
    await writeOut(`${USAGE}\n`);
    return;
  }
  if (command === 'id' && Object.keys(named).some((key) => key !== 'help')) {
    throw new UsageError(`id takes no options: ${Object.keys(named).filter((key) => key !== 'help').map((key) => flags[key]).join(', ')}`);
  }
  const nodeId = named.nodeId ? Buffer.from(named.nodeId, 'hex') : undefined;
  if (nodeId && nodeId.length !== 32) throw new UsageError('--node-id is the node\'s 32-byte key in hex');
  if (command === 'id' && positional[0] === 'new' && positional[1]) {
    if (existsSync(positional[1])) throw new UsageError(`${positional[1]} exists; its keys would be lost`);
    const file = {
      version: 1,
      signing_seed: hex(sodium.randombytes_buf(32)),
      encryption_key: hex(sodium.randombytes_buf(32)),
      sending_seed: hex(sodium.randombytes_buf(32)),
    };
    const identity = identityFrom(file);
    file.card = identity.card;
    // Its folders made owner-only if missing, as `meganet id new` makes them (the walkthrough's demo/ among them).
    mkdirSync(dirname(positional[1]), { recursive: true, mode: 0o700 });
    writeFileSync(positional[1], JSON.stringify(file, null, 2), { mode: 0o600, flag: 'wx' });
    await writeOut(`${file.card}\n`, false, `the identity was saved in ${positional[1]}`);
    return;
  }
  if (command === 'id' && positional[0] === 'show' && positional[1]) {
    const identity = loadIdentity(positional[1]);
    await writeOut(`${identity.card}\n`);
    return;
  }
  if (!['status', 'send', 'fetch', 'listen', 'audit'].includes(command)) throw new UsageError(USAGE);
  const stray = Object.keys(named).find((key) => key !== 'help' && !TAKES[command].includes(key));
  if (stray) throw new UsageError(`${command} does not take ${flags[stray]}`);
  if (named.after !== undefined && !/^[0-9]+$/.test(named.after)) throw new UsageError('--after is a mailbox sequence number (0 or more)');
  const url = named.node ?? 'http://127.0.0.1:7700';
  // new URL's own error ("Invalid URL") named neither the option nor the form it wants.
  let parsed = null;
  try { parsed = new URL(url); } catch { /* refused below */ }
  if (!parsed || !['http:', 'https:'].includes(parsed.protocol) || !parsed.hostname) {
    throw new UsageError(`--node takes the node's URL, http://HOST:PORT or https://HOST:PORT (e.g. http://127.0.0.1:7700), not '${printable(url)}'`);
  }
  const node = relay(url, named.tlsCert, named.timeout === undefined ? DEFAULT_TIMEOUT_MS : duration(named.timeout, '--timeout'));
  try {
    if (command === 'audit') {
      if (!named.heads && !named.identity) throw new UsageError(`audit needs --heads FILE (the remembered tree heads), or -i FILE to keep them in ${HEADS_FILE} beside it`);
      await audit(node, url, nodeId, named.heads ?? join(dirname(named.identity), HEADS_FILE));
    } else if (command === 'status') {
      // The node id is the key its tree heads are signed with (Status itself does not carry it).
      const head = await node.call('GetTreeHead', {});
      await writeOut(jsonLine({ node_id: hex(head.node_key), status: await node.call('Status', {}) }));
    } else if (command === 'send') {
      if (!named.to || named.text === undefined) throw new UsageError('send needs --to CARD and --text TEXT');
      const receipt = await send(node, loadIdentity(named.identity), parseCard(named.to), named.text, nodeId);
      await writeOut(jsonLine(receipt), false, `the message was sent (envelope ${receipt.envelope_id})`);
    } else {
      if (!nodeId) throw new UsageError(`${command} needs --node-id HEX (the node_id 'status' prints; check it with the node's operator): a client signs a challenge only for the node it means`);
      if (command === 'fetch') await fetch(node, loadIdentity(named.identity), nodeId, named.ack === true, named.after ?? '0');
      else {
        const count = named.count === undefined ? undefined : Number(named.count);
        if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new UsageError('--count is a number of messages, 1 or more');
        await listen(node, loadIdentity(named.identity), nodeId, named.after ?? '0', count);
      }
    }
  } finally {
    node.close();
  }
}

// Run as a program, not when imported (the tests import verifyConsistency). Imported from `node -e CODE ARG`,
// process.argv[1] is ARG, which need not name a file: that is no program run, and not an error on import.
function runAsProgram() {
  if (process.argv[1] === undefined) return false;
  try {
    return realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (runAsProgram()) {
  try {
    await main(process.argv.slice(2));
  } catch (error) {
    console.error(`meganet.mjs: ${describe(error)}`);
    // As meganet's: 2 a node that cannot be reached or refuses the call (a gRPC error); 1 anything else: a mistake in
    // the command, a file that cannot be read, a node that fails a check (another id than --node-id). `audit` exits 3
    // itself for a log that shrank, forked or was rewritten.
    process.exitCode = error.exitCode ?? (isGrpcError(error) ? 2 : 1);
  }
}
