// envcrypt's small-file path: a whole batch of small files sealed in one native call.
//
// Why: a 4 KiB signed file needs ~1.3 ms of ECDSA (key pair + signature), yet the JavaScript path around it
// (a Node crypto object per step, each taking OpenSSL 3's algorithm-fetch locks; a PEM parsed per message;
// streams; a dozen file system calls) cost more than the ECDSA itself. Here each worker thread fetches its
// cipher and digests once and keeps them; a file is one open + fstat + read of the input, the frames sealed
// into a reused buffer, SHA-384 and an ECDSA signature from the raw private scalar, and one write into an
// O_TMPFILE file that is linked into place only when complete (nothing is ever visible under a temporary
// name, and a killed process leaves nothing). The message header (with its auth tag) still comes from
// JavaScript, built by the Encryption SDK's own serializer; this file only appends frames and the footer.
//
// Also: signing key pairs for the main thread's materials manager, made here on the worker threads.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <napi.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr size_t kIvLength = 12;
constexpr size_t kTagLength = 16;
constexpr uint32_t kSequenceNumberEnd = 0xFFFFFFFFu;
// A small file is read and sealed whole in memory; JavaScript sends larger ones down the streaming path.
constexpr size_t kMaxSmallFile = 4 * 1024 * 1024;

void PutUint32BE(uint8_t* at, uint32_t value) {
  at[0] = static_cast<uint8_t>(value >> 24);
  at[1] = static_cast<uint8_t>(value >> 16);
  at[2] = static_cast<uint8_t>(value >> 8);
  at[3] = static_cast<uint8_t>(value);
}

// OpenSSL objects fetched once per thread (fetching takes a lock on every call in OpenSSL 3), and the
// buffers reused from file to file. Each worker thread loads the addon and gets its own.
struct ThreadState {
  EVP_CIPHER* aes[3] = {nullptr, nullptr, nullptr};  // 128, 192, 256 GCM
  EVP_MD* sha256 = nullptr;
  EVP_MD* sha384 = nullptr;
  EVP_CIPHER_CTX* cipher = nullptr;
  EVP_MD_CTX* digest = nullptr;
  EC_GROUP* p256 = nullptr;
  EC_GROUP* p384 = nullptr;
  std::vector<uint8_t> input;
  std::vector<uint8_t> output;
  std::vector<uint8_t> aad;
  // -1 unknown, 0 no, 1 yes: whether O_TMPFILE + linkat through /proc works here (probed on first use).
  int tmpfile = -1;
  ~ThreadState() {
    for (EVP_CIPHER* c : aes) EVP_CIPHER_free(c);
    EVP_MD_free(sha256);
    EVP_MD_free(sha384);
    EVP_CIPHER_CTX_free(cipher);
    EVP_MD_CTX_free(digest);
    EC_GROUP_free(p256);
    EC_GROUP_free(p384);
  }
};

thread_local ThreadState state;

const EVP_CIPHER* Aes(size_t keyLength) {
  int index = keyLength == 16 ? 0 : keyLength == 24 ? 1 : keyLength == 32 ? 2 : -1;
  if (index < 0) return nullptr;
  static const char* names[] = {"AES-128-GCM", "AES-192-GCM", "AES-256-GCM"};
  if (!state.aes[index]) state.aes[index] = EVP_CIPHER_fetch(nullptr, names[index], nullptr);
  return state.aes[index];
}

const EVP_MD* Digest(const std::string& name) {
  if (name == "SHA384") return state.sha384 ? state.sha384 : (state.sha384 = EVP_MD_fetch(nullptr, "SHA384", nullptr));
  if (name == "SHA256") return state.sha256 ? state.sha256 : (state.sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr));
  return nullptr;
}

const EC_GROUP* Group(const std::string& curve) {
  if (curve == "secp384r1") return state.p384 ? state.p384 : (state.p384 = EC_GROUP_new_by_curve_name(NID_secp384r1));
  if (curve == "prime256v1") return state.p256 ? state.p256 : (state.p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1));
  return nullptr;
}

// What a file's job says, read from its JavaScript object once.
struct Job {
  std::string input, temporaryPath, finalPath, directory, hash, curve;
  double plannedSize = -1, plannedMtimeMs = -1, plannedIno = -1;
  Napi::Buffer<uint8_t> header, key, messageId, signingKey;
  bool hasSigningKey = false;
  size_t frameLength = 0;
  uint32_t mode = 0600;
  bool fsync = false, noClobber = false;
  // Message format v1 puts the header auth IV (zeros) before the tag; v2 only the tag.
  bool headerAuthIv = false;
  // Write through the named temporary even where O_TMPFILE works (tests of the fallback).
  bool namedTemporary = false;
};

// The outcome of one file, turned into a JavaScript object at the end.
struct Outcome {
  enum Kind { kOk, kSystem, kChanged, kExists, kInterrupted, kInternal } kind = kOk;
  int error = 0;
  std::string syscall, path, reason;
  size_t bytesRead = 0, bytesOut = 0;
  size_t headerAuthLength = 0;
  uint8_t headerAuth[kIvLength + kTagLength];
};

Outcome System(const char* syscall, const std::string& path) {
  Outcome outcome;
  outcome.kind = Outcome::kSystem;
  outcome.error = errno;
  outcome.syscall = syscall;
  outcome.path = path;
  return outcome;
}

Outcome Internal(const char* reason) {
  Outcome outcome;
  outcome.kind = Outcome::kInternal;
  outcome.reason = reason;
  return outcome;
}

double MtimeMs(const struct stat& st) {
  // As Node computes Stats.mtimeMs, so the planner's value compares equal.
  return static_cast<double>(st.st_mtim.tv_sec) * 1e3 + static_cast<double>(st.st_mtim.tv_nsec) / 1e6;
}

// Why `st` is not the file that was planned, or "" (the wording of src/store/input-check.ts).
std::string InputChange(const Job& job, const struct stat& st, long long bytesRead) {
  char text[128];
  if (job.plannedIno >= 0 && static_cast<double>(st.st_ino) != job.plannedIno) return "replaced by another file";
  if (job.plannedSize >= 0 && static_cast<double>(st.st_size) != job.plannedSize) {
    std::snprintf(text, sizeof text, "size %.0f became %lld bytes", job.plannedSize, static_cast<long long>(st.st_size));
    return text;
  }
  if (bytesRead >= 0 && job.plannedSize >= 0 && static_cast<double>(bytesRead) != job.plannedSize) {
    std::snprintf(text, sizeof text, "%lld of %.0f bytes read", bytesRead, job.plannedSize);
    return text;
  }
  if (job.plannedMtimeMs >= 0 && MtimeMs(st) != job.plannedMtimeMs) return "modified";
  return "";
}

Outcome Changed(const std::string& reason) {
  Outcome outcome;
  outcome.kind = Outcome::kChanged;
  outcome.reason = reason;
  return outcome;
}

// Read the whole input into state.input, checking before and after that it is the planned file.
Outcome ReadInput(const Job& job, size_t* length) {
  int fd = open(job.input.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return System("open", job.input);
  struct stat before;
  if (fstat(fd, &before) != 0) {
    Outcome failed = System("fstat", job.input);
    close(fd);
    return failed;
  }
  std::string change = InputChange(job, before, -1);
  if (!change.empty() || static_cast<size_t>(before.st_size) > kMaxSmallFile) {
    close(fd);
    return Changed(change.empty() ? "grew beyond the small-file limit" : change);
  }
  // One byte more than expected, to see a file that grew.
  size_t want = static_cast<size_t>(before.st_size) + 1;
  if (state.input.size() < want) state.input.resize(want);
  size_t done = 0;
  for (;;) {
    ssize_t got = read(fd, state.input.data() + done, want - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      Outcome failed = System("read", job.input);
      close(fd);
      return failed;
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
    if (done == want) break;
  }
  struct stat after;
  int statted = fstat(fd, &after);
  close(fd);
  if (statted != 0) return System("fstat", job.input);
  change = InputChange(job, after, static_cast<long long>(done));
  if (change.empty() && done != static_cast<size_t>(before.st_size)) change = "read a different size than the file had";
  if (change.empty() && job.plannedIno >= 0) {
    struct stat now;
    if (stat(job.input.c_str(), &now) != 0) change = "removed";
    else if (now.st_ino != after.st_ino) change = "replaced by another file";
  }
  if (!change.empty()) return Changed(change);
  *length = done;
  return Outcome();
}

bool SealFrame(const uint8_t* iv, const uint8_t* aad, size_t aadLength, const uint8_t* plaintext, size_t length,
               uint8_t* ciphertext, uint8_t* tag) {
  EVP_CIPHER_CTX* ctx = state.cipher;
  int written = 0;
  if (EVP_EncryptInit_ex2(ctx, nullptr, nullptr, iv, nullptr) != 1) return false;
  if (EVP_EncryptUpdate(ctx, nullptr, &written, aad, static_cast<int>(aadLength)) != 1) return false;
  if (length > 0 && (EVP_EncryptUpdate(ctx, ciphertext, &written, plaintext, static_cast<int>(length)) != 1 ||
                     static_cast<size_t>(written) != length)) {
    return false;
  }
  if (EVP_EncryptFinal_ex(ctx, ciphertext + length, &written) != 1 || written != 0) return false;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagLength, tag) == 1;
}

// header || header auth || frames into state.output (frames as frames.cc EncryptFrames with isLast).
bool SealBody(const Job& job, const uint8_t* plaintext, size_t length, const Napi::Buffer<uint8_t>& frameString,
              const Napi::Buffer<uint8_t>& finalString, size_t* outLength, Outcome* outcome) {
  const size_t frameLength = job.frameLength;
  const size_t fullFrames = length / frameLength;
  const size_t finalLength = length - fullFrames * frameLength;
  if (fullFrames + 1 > kSequenceNumberEnd) return false;
  // Room for the frames plus a signature footer (2 + at most 2 + 2 * (3 + 49) DER bytes for P-384).
  const size_t needed = job.header.Length() + kIvLength + kTagLength + fullFrames * (4 + kIvLength + frameLength + kTagLength) +
                        (4 + 4 + kIvLength + 4 + finalLength + kTagLength) + 2 + 128;
  if (state.output.size() < needed) state.output.resize(needed);
  const EVP_CIPHER* cipher = Aes(job.key.Length());
  if (!cipher) return false;
  if (!state.cipher && !(state.cipher = EVP_CIPHER_CTX_new())) return false;
  if (EVP_EncryptInit_ex2(state.cipher, cipher, job.key.Data(), nullptr, nullptr) != 1) return false;
  const size_t idLength = job.messageId.Length();
  const size_t longest = idLength + std::max(frameString.Length(), finalString.Length()) + 12;
  if (state.aad.size() < longest) state.aad.resize(longest);
  std::memcpy(state.aad.data(), job.messageId.Data(), idLength);

  uint8_t* at = state.output.data();
  std::memcpy(at, job.header.Data(), job.header.Length());
  at += job.header.Length();
  // Header authentication: the tag of an empty plaintext with the header as AAD, under an all-zero IV.
  uint8_t* auth = at;
  std::memset(at, 0, kIvLength);
  uint8_t zeroIv[kIvLength] = {0};
  if (job.headerAuthIv) at += kIvLength;
  uint8_t unused[1];
  if (!SealFrame(zeroIv, job.header.Data(), job.header.Length(), unused, 0, unused, at)) return false;
  at += kTagLength;
  outcome->headerAuthLength = static_cast<size_t>(at - auth);
  std::memcpy(outcome->headerAuth, auth, outcome->headerAuthLength);
  const uint8_t* read = plaintext;
  for (size_t i = 0; i <= fullFrames; i++) {
    const bool isFinal = i == fullFrames;
    const uint32_t sequenceNumber = static_cast<uint32_t>(i + 1);
    const size_t contentLength = isFinal ? finalLength : frameLength;
    const Napi::Buffer<uint8_t>& contentString = isFinal ? finalString : frameString;
    if (isFinal) {
      PutUint32BE(at, kSequenceNumberEnd);
      at += 4;
    }
    PutUint32BE(at, sequenceNumber);
    at += 4;
    uint8_t* iv = at;
    std::memset(iv, 0, kIvLength - 4);
    PutUint32BE(iv + kIvLength - 4, sequenceNumber);
    at += kIvLength;
    if (isFinal) {
      PutUint32BE(at, static_cast<uint32_t>(contentLength));
      at += 4;
    }
    // AAD: messageId || content string || uint32 sequence number || uint64 content length.
    uint8_t* tail = state.aad.data() + idLength;
    std::memcpy(tail, contentString.Data(), contentString.Length());
    tail += contentString.Length();
    PutUint32BE(tail, sequenceNumber);
    PutUint32BE(tail + 4, static_cast<uint32_t>(static_cast<uint64_t>(contentLength) >> 32));
    PutUint32BE(tail + 8, static_cast<uint32_t>(contentLength));
    const size_t aadLength = static_cast<size_t>(tail + 12 - state.aad.data());
    if (!SealFrame(iv, state.aad.data(), aadLength, read, contentLength, at, at + contentLength)) return false;
    at += contentLength + kTagLength;
    read += contentLength;
  }
  *outLength = static_cast<size_t>(at - state.output.data());
  return true;
}

// Appends the signature footer (uint16 length || DER ECDSA signature of the hash of everything before it).
bool AppendSignature(const Job& job, size_t* outLength) {
  const EVP_MD* md = Digest(job.hash);
  const EC_GROUP* group = Group(job.curve);
  if (!md || !group) return false;
  if (!state.digest && !(state.digest = EVP_MD_CTX_new())) return false;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digestLength = 0;
  if (EVP_DigestInit_ex2(state.digest, md, nullptr) != 1 || EVP_DigestUpdate(state.digest, state.output.data(), *outLength) != 1 ||
      EVP_DigestFinal_ex(state.digest, digest, &digestLength) != 1) {
    return false;
  }
  EC_KEY* key = EC_KEY_new();
  BIGNUM* scalar = BN_secure_new();
  bool ok = key && scalar && EC_KEY_set_group(key, group) == 1 &&
            BN_bin2bn(job.signingKey.Data(), static_cast<int>(job.signingKey.Length()), scalar) != nullptr &&
            EC_KEY_set_private_key(key, scalar) == 1;
  ECDSA_SIG* signature = ok ? ECDSA_do_sign(digest, static_cast<int>(digestLength), key) : nullptr;
  BN_clear_free(scalar);
  EC_KEY_free(key);
  if (!signature) return false;
  uint8_t* at = state.output.data() + *outLength + 2;
  int derLength = i2d_ECDSA_SIG(signature, nullptr);
  ok = derLength > 0 && derLength <= 126 && i2d_ECDSA_SIG(signature, &at) == derLength;
  ECDSA_SIG_free(signature);
  if (!ok) return false;
  state.output[*outLength] = static_cast<uint8_t>(derLength >> 8);
  state.output[*outLength + 1] = static_cast<uint8_t>(derLength);
  *outLength += 2 + static_cast<size_t>(derLength);
  return true;
}

bool Stopped(const int32_t* stop) { return __atomic_load_n(stop, __ATOMIC_SEQ_CST) != 0; }

bool WriteAll(int fd, const uint8_t* data, size_t length) {
  while (length > 0) {
    ssize_t wrote = write(fd, data, length);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      if (wrote == 0) errno = EIO;
      return false;
    }
    data += wrote;
    length -= static_cast<size_t>(wrote);
  }
  return true;
}

Outcome SyncDirectory(const Job& job) {
  int dir = open(job.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return System("open", job.directory);
  int synced = ::fsync(dir);
  Outcome outcome = synced == 0 ? Outcome() : System("fsync", job.directory);
  close(dir);
  return outcome;
}

Outcome Exists(const Job& job) {
  Outcome outcome;
  outcome.kind = Outcome::kExists;
  outcome.path = job.finalPath;
  return outcome;
}

// Put the named temporary at the final name: rename, or (noClobber) link, which never replaces, and unlink.
Outcome PlaceTemporary(const Job& job) {
  if (job.noClobber) {
    if (link(job.temporaryPath.c_str(), job.finalPath.c_str()) != 0) {
      Outcome failed = errno == EEXIST ? Exists(job) : System("link", job.finalPath);
      unlink(job.temporaryPath.c_str());
      return failed;
    }
    unlink(job.temporaryPath.c_str());
  } else if (rename(job.temporaryPath.c_str(), job.finalPath.c_str()) != 0) {
    Outcome failed = System("rename", job.finalPath);
    unlink(job.temporaryPath.c_str());
    return failed;
  }
  return job.fsync ? SyncDirectory(job) : Outcome();
}

// Data written and given its mode; `fd` is closed here in every case.
Outcome FinishFile(const Job& job, int fd, size_t length, const char* pathForErrors) {
  bool ok = WriteAll(fd, state.output.data(), length) && (!job.fsync || ::fsync(fd) == 0) && fchmod(fd, job.mode) == 0;
  Outcome failed = ok ? Outcome() : System("write", pathForErrors);
  close(fd);
  return failed;
}

// The fallback: a named temporary (O_EXCL, 0600, the name the main thread reserved and removes on exit).
Outcome WriteThroughTemporary(const Job& job, size_t length, const int32_t* stop) {
  int fd = open(job.temporaryPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return System("open", job.temporaryPath);
  Outcome written = FinishFile(job, fd, length, job.temporaryPath.c_str());
  if (written.kind == Outcome::kOk && Stopped(stop)) written.kind = Outcome::kInterrupted;
  if (written.kind != Outcome::kOk) {
    unlink(job.temporaryPath.c_str());
    return written;
  }
  return PlaceTemporary(job);
}

// O_TMPFILE: the file has no name until it is complete; linkat gives it the final one (never replacing) or,
// when the output exists and may be replaced, the temporary name, which is then renamed over it.
// Returns false (and writes nothing) when this file system or kernel cannot do it.
bool WriteUnnamed(const Job& job, size_t length, const int32_t* stop, Outcome* outcome) {
  if (state.tmpfile == 0 || job.namedTemporary) return false;
  int fd = open(job.directory.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) {
      state.tmpfile = 0;
      return false;
    }
    *outcome = System("open", job.finalPath);
    return true;
  }
  bool ok = WriteAll(fd, state.output.data(), length) && (!job.fsync || ::fsync(fd) == 0) && fchmod(fd, job.mode) == 0;
  if (!ok) {
    *outcome = System("write", job.finalPath);
    close(fd);
    return true;
  }
  if (Stopped(stop)) {
    outcome->kind = Outcome::kInterrupted;
    close(fd);
    return true;
  }
  char self[64];
  std::snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  int linked = linkat(AT_FDCWD, self, AT_FDCWD, job.finalPath.c_str(), AT_SYMLINK_FOLLOW);
  if (linked != 0 && errno == EEXIST && !job.noClobber) {
    linked = linkat(AT_FDCWD, self, AT_FDCWD, job.temporaryPath.c_str(), AT_SYMLINK_FOLLOW);
    if (linked == 0) {
      close(fd);
      *outcome = PlaceTemporary(job);
      return true;
    }
  }
  int linkError = errno;
  close(fd);
  if (linked == 0) {
    state.tmpfile = 1;
    *outcome = job.fsync ? SyncDirectory(job) : Outcome();
    return true;
  }
  if (linkError == EEXIST) {
    *outcome = Exists(job);
    return true;
  }
  if (state.tmpfile == -1 && (linkError == ENOENT || linkError == EXDEV || linkError == EPERM)) {
    // No /proc, or linkat refused: named temporaries from now on.
    state.tmpfile = 0;
    return false;
  }
  errno = linkError;
  *outcome = System("link", job.finalPath);
  return true;
}

Outcome SealOne(const Job& job, const Napi::Buffer<uint8_t>& frameString, const Napi::Buffer<uint8_t>& finalString,
                const int32_t* stop) {
  if (Stopped(stop)) {
    Outcome outcome;
    outcome.kind = Outcome::kInterrupted;
    return outcome;
  }
  size_t length = 0;
  Outcome read = ReadInput(job, &length);
  if (read.kind != Outcome::kOk) return read;
  size_t outLength = 0;
  Outcome sealed;
  if (!SealBody(job, state.input.data(), length, frameString, finalString, &outLength, &sealed)) return Internal("sealing the frames failed");
  if (job.hasSigningKey && !AppendSignature(job, &outLength)) return Internal("signing failed");
  Outcome written;
  if (!WriteUnnamed(job, outLength, stop, &written)) written = WriteThroughTemporary(job, outLength, stop);
  written.bytesRead = length;
  written.bytesOut = outLength;
  written.headerAuthLength = sealed.headerAuthLength;
  std::memcpy(written.headerAuth, sealed.headerAuth, sealed.headerAuthLength);
  return written;
}

bool ReadJob(const Napi::Object& object, Job* job) {
  auto text = [&](const char* name, std::string* out) {
    Napi::Value value = object.Get(name);
    if (!value.IsString()) return false;
    *out = value.As<Napi::String>().Utf8Value();
    return true;
  };
  auto buffer = [&](const char* name, Napi::Buffer<uint8_t>* out) {
    Napi::Value value = object.Get(name);
    if (!value.IsBuffer()) return false;
    *out = value.As<Napi::Buffer<uint8_t>>();
    return true;
  };
  auto number = [&](const char* name, double* out) {
    Napi::Value value = object.Get(name);
    if (value.IsUndefined()) return true;
    if (!value.IsNumber()) return false;
    *out = value.As<Napi::Number>().DoubleValue();
    return true;
  };
  double frameLength = 0, mode = 0600;
  if (!text("input", &job->input) || !text("temporaryPath", &job->temporaryPath) || !text("finalPath", &job->finalPath) ||
      !text("directory", &job->directory) || !buffer("header", &job->header) || !buffer("key", &job->key) ||
      !buffer("messageId", &job->messageId) || !number("frameLength", &frameLength) || !number("mode", &mode) ||
      !number("plannedSize", &job->plannedSize) || !number("plannedMtimeMs", &job->plannedMtimeMs) ||
      !number("plannedIno", &job->plannedIno)) {
    return false;
  }
  if (!(frameLength >= 1 && frameLength <= kSequenceNumberEnd) || std::floor(frameLength) != frameLength) return false;
  if (!(mode >= 0 && mode <= 07777)) return false;
  job->frameLength = static_cast<size_t>(frameLength);
  job->mode = static_cast<uint32_t>(mode);
  job->fsync = object.Get("fsync").ToBoolean().Value();
  job->noClobber = object.Get("noClobber").ToBoolean().Value();
  job->headerAuthIv = object.Get("headerAuthIv").ToBoolean().Value();
  job->namedTemporary = object.Get("namedTemporary").ToBoolean().Value();
  if (object.Get("signingKey").IsBuffer()) {
    job->hasSigningKey = buffer("signingKey", &job->signingKey) && text("curve", &job->curve) && text("hash", &job->hash);
    if (!job->hasSigningKey) return false;
  }
  return job->messageId.Length() <= 64;
}

Napi::Object OutcomeObject(Napi::Env env, const Outcome& outcome) {
  Napi::Object result = Napi::Object::New(env);
  static const char* kinds[] = {"ok", "system", "changed", "exists", "interrupted", "internal"};
  result.Set("kind", kinds[outcome.kind]);
  result.Set("bytesIn", static_cast<double>(outcome.bytesRead));
  result.Set("bytesOut", static_cast<double>(outcome.bytesOut));
  if (outcome.kind == Outcome::kSystem) {
    result.Set("errno", outcome.error);
    result.Set("syscall", outcome.syscall);
  }
  if (!outcome.path.empty()) result.Set("path", outcome.path);
  if (outcome.kind == Outcome::kOk) result.Set("headerAuth", Napi::Buffer<uint8_t>::Copy(env, outcome.headerAuth, outcome.headerAuthLength));
  if (!outcome.reason.empty()) result.Set("reason", outcome.reason);
  return result;
}

// sealSmallFiles(jobs, frameString, finalFrameString, stop) -> [{ kind, bytesIn, bytesOut, errno?, syscall?,
// path?, reason? }]. Each job: { input, plannedSize?, plannedMtimeMs?, plannedIno?, header, key, messageId,
// frameLength, signingKey?, curve?, hash?, directory, temporaryPath, finalPath, mode, fsync, noClobber }.
// `stop` is the run's shared Int32Array: checked before each file and just before its output gets a name.
Napi::Value SealSmallFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 4 || !info[0].IsArray() || !info[1].IsBuffer() || !info[2].IsBuffer() || !info[3].IsTypedArray() ||
      info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Napi::TypeError::New(env, "sealSmallFiles: bad arguments").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array jobs = info[0].As<Napi::Array>();
  auto frameString = info[1].As<Napi::Buffer<uint8_t>>();
  auto finalString = info[2].As<Napi::Buffer<uint8_t>>();
  auto stopArray = info[3].As<Napi::Int32Array>();
  if (stopArray.ElementLength() < 1) {
    Napi::TypeError::New(env, "sealSmallFiles: empty stop flag").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int32_t* stop = stopArray.Data();
  Napi::Array results = Napi::Array::New(env, jobs.Length());
  for (uint32_t i = 0; i < jobs.Length(); i++) {
    Napi::Value value = jobs.Get(i);
    Job job;
    Outcome outcome = value.IsObject() && ReadJob(value.As<Napi::Object>(), &job) ? SealOne(job, frameString, finalString, stop)
                                                                                    : Internal("bad job");
    results.Set(i, OutcomeObject(env, outcome));
  }
  if (!state.input.empty()) OPENSSL_cleanse(state.input.data(), state.input.size());
  return results;
}

// makeSigningKeyPairs(curve, count) -> Buffer of `count` records: private scalar (field size, big-endian)
// || compressed public point (1 + field size). For the main thread's materials manager.
Napi::Value MakeSigningKeyPairs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsString() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "makeSigningKeyPairs: bad arguments").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const EC_GROUP* group = Group(info[0].As<Napi::String>().Utf8Value());
  const int count = info[1].As<Napi::Number>().Int32Value();
  if (!group || count < 1 || count > 4096) {
    Napi::TypeError::New(env, "makeSigningKeyPairs: unknown curve or bad count").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t fieldBytes = static_cast<size_t>((EC_GROUP_get_degree(group) + 7) / 8);
  const size_t record = fieldBytes + 1 + fieldBytes;
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, record * static_cast<size_t>(count));
  EC_KEY* key = EC_KEY_new();
  bool ok = key && EC_KEY_set_group(key, group) == 1;
  for (int i = 0; ok && i < count; i++) {
    uint8_t* at = out.Data() + record * static_cast<size_t>(i);
    ok = EC_KEY_generate_key(key) == 1 &&
         BN_bn2binpad(EC_KEY_get0_private_key(key), at, static_cast<int>(fieldBytes)) == static_cast<int>(fieldBytes) &&
         EC_POINT_point2oct(group, EC_KEY_get0_public_key(key), POINT_CONVERSION_COMPRESSED, at + fieldBytes, fieldBytes + 1,
                            nullptr) == fieldBytes + 1;
  }
  EC_KEY_free(key);
  if (!ok) {
    OPENSSL_cleanse(out.Data(), out.Length());
    Napi::Error::New(env, "makeSigningKeyPairs: OpenSSL failure").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return out;
}

}  // namespace

void RegisterSmallFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("sealSmallFiles", Napi::Function::New(env, SealSmallFiles, "sealSmallFiles"));
  exports.Set("makeSigningKeyPairs", Napi::Function::New(env, MakeSigningKeyPairs, "makeSigningKeyPairs"));
}
