// envcrypt's optional native frame kernel: AES-GCM over all the frames of a batch in one call.
//
// Why: in JavaScript each 4 KiB frame costs a createCipheriv + setAAD + update + final + getAuthTag (~12 us,
// mostly object and call overhead, not AES). Here one EVP_CIPHER_CTX gets the key once per call and each
// frame only sets its IV, so a frame costs ~1.5 us. The message format is decided entirely in JavaScript
// (engine-js.ts); this file only writes the bytes JavaScript asked for, at the offsets it computed, and
// checks every offset and length against the buffers before touching memory.
//
// OpenSSL comes from the node binary itself (headers from Node's include dir; symbols resolve at load).
// NAPI_VERSION and NAPI_DISABLE_CPP_EXCEPTIONS come from binding.gyp.
#include <napi.h>
#include <openssl/evp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

// native/small-files.cc: the whole path of a batch of small files.
void RegisterSmallFiles(Napi::Env env, Napi::Object exports);

namespace {

// The Encryption SDK's suites all use 12-byte IVs and 16-byte tags; the kernel refuses anything else
// rather than silently producing another format.
constexpr size_t kIvLength = 12;
constexpr size_t kTagLength = 16;
// Frame AAD tail after messageId || content string: uint32 sequence number || uint64 content length.
constexpr size_t kAadTailLength = 12;
// A frame header in front of the IV: uint32 sequence number; the final frame has a uint32 end marker before
// it and a uint32 content length after the IV.
constexpr uint32_t kSequenceNumberEnd = 0xFFFFFFFFu;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

void PutUint32BE(uint8_t* at, uint32_t value) {
  at[0] = static_cast<uint8_t>(value >> 24);
  at[1] = static_cast<uint8_t>(value >> 16);
  at[2] = static_cast<uint8_t>(value >> 8);
  at[3] = static_cast<uint8_t>(value);
}

void PutUint64BE(uint8_t* at, uint64_t value) {
  PutUint32BE(at, static_cast<uint32_t>(value >> 32));
  PutUint32BE(at + 4, static_cast<uint32_t>(value));
}

const EVP_CIPHER* CipherForKeyLength(size_t keyLength) {
  switch (keyLength) {
    case 16: return EVP_aes_128_gcm();
    case 24: return EVP_aes_192_gcm();
    case 32: return EVP_aes_256_gcm();
    default: return nullptr;
  }
}

// Throws a JavaScript TypeError/Error and lets the caller return undefined.
Napi::Value Fail(const Napi::Env& env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool IsBuffer(const Napi::Value& value) { return value.IsBuffer(); }
// A JavaScript number that is a non-negative integer no larger than `limit`.
bool ReadIndex(const Napi::Value& value, double limit, size_t* out) {
  if (!value.IsNumber()) return false;
  double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= 0 && number <= limit) || std::floor(number) != number) return false;
  *out = static_cast<size_t>(number);
  return true;
}

// The key schedule is set up once per call; frames then only change the IV.
CipherCtx NewContext(const uint8_t* key, size_t keyLength, bool encrypt) {
  const EVP_CIPHER* cipher = CipherForKeyLength(keyLength);
  if (cipher == nullptr) return nullptr;
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return nullptr;
  int ok = encrypt ? EVP_EncryptInit_ex(ctx.get(), cipher, nullptr, key, nullptr)
                   : EVP_DecryptInit_ex(ctx.get(), cipher, nullptr, key, nullptr);
  if (ok != 1) return nullptr;
  // 12 bytes is GCM's default IV length; set it anyway so the context never depends on a default.
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kIvLength, nullptr) != 1) return nullptr;
  return ctx;
}

// AAD for one frame: the caller's prefix (messageId || content string) with the tail filled in.
// `aad` has room for prefix + 12 bytes; the prefix is already in place.
void FillAadTail(uint8_t* tail, uint32_t sequenceNumber, uint64_t contentLength) {
  PutUint32BE(tail, sequenceNumber);
  PutUint64BE(tail + 4, contentLength);
}

// GCM encrypt of one frame. EVP_EncryptUpdate/Final write to `ciphertext`; GCM is a stream mode, so the
// output length equals the input length and Final writes nothing.
bool SealFrame(EVP_CIPHER_CTX* ctx, const uint8_t* iv, const uint8_t* aad, size_t aadLength,
               const uint8_t* plaintext, size_t length, uint8_t* ciphertext, uint8_t* tag) {
  int written = 0;
  if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv) != 1) return false;
  if (EVP_EncryptUpdate(ctx, nullptr, &written, aad, static_cast<int>(aadLength)) != 1) return false;
  size_t done = 0;
  // EVP lengths are int: feed very large frames (up to 2^32-1 bytes) in pieces.
  while (done < length) {
    size_t piece = length - done;
    if (piece > (1u << 30)) piece = 1u << 30;
    if (EVP_EncryptUpdate(ctx, ciphertext + done, &written, plaintext + done, static_cast<int>(piece)) != 1) return false;
    if (static_cast<size_t>(written) != piece) return false;
    done += piece;
  }
  if (EVP_EncryptFinal_ex(ctx, ciphertext + done, &written) != 1 || written != 0) return false;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagLength, tag) == 1;
}

// GCM decrypt of one frame; false when the tag does not verify (or OpenSSL fails).
bool OpenFrame(EVP_CIPHER_CTX* ctx, const uint8_t* iv, const uint8_t* aad, size_t aadLength,
               const uint8_t* ciphertext, size_t length, const uint8_t* tag, uint8_t* plaintext) {
  int written = 0;
  if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, iv) != 1) return false;
  if (EVP_DecryptUpdate(ctx, nullptr, &written, aad, static_cast<int>(aadLength)) != 1) return false;
  size_t done = 0;
  while (done < length) {
    size_t piece = length - done;
    if (piece > (1u << 30)) piece = 1u << 30;
    if (EVP_DecryptUpdate(ctx, plaintext + done, &written, ciphertext + done, static_cast<int>(piece)) != 1) return false;
    if (static_cast<size_t>(written) != piece) return false;
    done += piece;
  }
  // OpenSSL only reads the expected tag; the const_cast is its API, not a write.
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagLength, const_cast<uint8_t*>(tag)) != 1) return false;
  return EVP_DecryptFinal_ex(ctx, plaintext + done, &written) == 1 && written == 0;
}

// encryptFrames(key, plaintext, out, outOffset, frameAadPrefix, finalFrameAadPrefix, firstSequenceNumber,
//               frameLength, isLast) -> bytes written
//
// Writes, from out[outOffset], floor(plaintext.length / frameLength) regular frames
//   uint32 seq || IV (zeros || uint32 seq) || ciphertext || tag
// and, when isLast, the final frame with the remainder (possibly empty)
//   uint32 0xFFFFFFFF || uint32 seq || IV || uint32 length || ciphertext || tag.
// When not last, the plaintext must be whole frames. Sequence numbers must stay below the end marker for
// regular frames (JavaScript checks this too, with its own error message, before calling).
Napi::Value EncryptFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 9 || !IsBuffer(info[0]) || !IsBuffer(info[1]) || !IsBuffer(info[2]) || !IsBuffer(info[4]) ||
      !IsBuffer(info[5]) || !info[8].IsBoolean()) {
    return Fail(env, "encryptFrames: bad arguments");
  }
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto plaintext = info[1].As<Napi::Buffer<uint8_t>>();
  auto out = info[2].As<Napi::Buffer<uint8_t>>();
  auto frameAadPrefix = info[4].As<Napi::Buffer<uint8_t>>();
  auto finalAadPrefix = info[5].As<Napi::Buffer<uint8_t>>();
  size_t outOffset, firstSequenceNumber, frameLength;
  if (!ReadIndex(info[3], static_cast<double>(out.Length()), &outOffset) ||
      !ReadIndex(info[6], kSequenceNumberEnd, &firstSequenceNumber) || firstSequenceNumber == 0 ||
      !ReadIndex(info[7], kSequenceNumberEnd, &frameLength) || frameLength == 0) {
    return Fail(env, "encryptFrames: offset, sequence number or frame length out of range");
  }
  const bool isLast = info[8].As<Napi::Boolean>().Value();

  const size_t fullFrames = plaintext.Length() / frameLength;
  const size_t finalLength = plaintext.Length() - fullFrames * frameLength;
  if (!isLast && finalLength != 0) return Fail(env, "encryptFrames: partial frame in a non-final batch");
  const size_t frames = fullFrames + (isLast ? 1 : 0);
  // Sequence numbers: regular frames stay below the end marker; the final frame may use it.
  if (frames > 0) {
    const uint64_t lastSequenceNumber = static_cast<uint64_t>(firstSequenceNumber) + frames - 1;
    const uint64_t limit = isLast ? kSequenceNumberEnd : kSequenceNumberEnd - 1;
    if (lastSequenceNumber > limit) {
      return Fail(env, "encryptFrames: more than 2^32-1 frames");
    }
  }
  // Exact output size, checked against the room after outOffset (sizes fit in 64 bits: frames < 2^32).
  const uint64_t regularFrameBytes = 4 + kIvLength + static_cast<uint64_t>(frameLength) + kTagLength;
  const uint64_t finalFrameBytes = 4 + 4 + kIvLength + 4 + static_cast<uint64_t>(finalLength) + kTagLength;
  const uint64_t needed = fullFrames * regularFrameBytes + (isLast ? finalFrameBytes : 0);
  if (needed > out.Length() - outOffset) return Fail(env, "encryptFrames: output buffer too small");

  CipherCtx ctx = NewContext(key.Data(), key.Length(), true);
  if (!ctx) return Fail(env, "encryptFrames: bad key length or OpenSSL failure");

  // One AAD buffer per content string; only the 12-byte tail changes per frame.
  const size_t frameAadLength = frameAadPrefix.Length() + kAadTailLength;
  const size_t finalAadLength = finalAadPrefix.Length() + kAadTailLength;
  std::unique_ptr<uint8_t[]> frameAad(new uint8_t[frameAadLength]);
  std::unique_ptr<uint8_t[]> finalAad(new uint8_t[finalAadLength]);
  std::memcpy(frameAad.get(), frameAadPrefix.Data(), frameAadPrefix.Length());
  std::memcpy(finalAad.get(), finalAadPrefix.Data(), finalAadPrefix.Length());

  uint8_t* at = out.Data() + outOffset;
  const uint8_t* read = plaintext.Data();
  for (size_t i = 0; i < frames; i++) {
    const bool isFinal = i == fullFrames;
    const uint32_t sequenceNumber = static_cast<uint32_t>(firstSequenceNumber + i);
    const size_t contentLength = isFinal ? finalLength : frameLength;
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
    uint8_t* aad = isFinal ? finalAad.get() : frameAad.get();
    const size_t aadLength = isFinal ? finalAadLength : frameAadLength;
    FillAadTail(aad + aadLength - kAadTailLength, sequenceNumber, contentLength);
    if (!SealFrame(ctx.get(), iv, aad, aadLength, read, contentLength, at, at + contentLength)) {
      return Fail(env, "encryptFrames: OpenSSL failure");
    }
    at += contentLength + kTagLength;
    read += contentLength;
  }
  return Napi::Number::New(env, static_cast<double>(at - (out.Data() + outOffset)));
}

// decryptFrames(key, input, frames, out, frameAadPrefix, finalFrameAadPrefix) -> index of the first frame
// whose tag failed, or -1 when all verified.
//
// `frames` is a Float64Array of 5 numbers per frame, computed by JavaScript's frame parser:
//   ivOffset, ciphertextOffset, contentLength, sequenceNumber, isFinal (0/1)
// (offsets into `input`; the tag follows the ciphertext). Plaintext is written back to back into `out`.
// Stops at the first failure: what was written for earlier frames of the call must then be discarded.
Napi::Value DecryptFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 6 || !IsBuffer(info[0]) || !IsBuffer(info[1]) || !info[2].IsTypedArray() || !IsBuffer(info[3]) ||
      !IsBuffer(info[4]) || !IsBuffer(info[5])) {
    return Fail(env, "decryptFrames: bad arguments");
  }
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto input = info[1].As<Napi::Buffer<uint8_t>>();
  auto typed = info[2].As<Napi::TypedArray>();
  if (typed.TypedArrayType() != napi_float64_array) return Fail(env, "decryptFrames: frames must be a Float64Array");
  auto frames = typed.As<Napi::Float64Array>();
  auto out = info[3].As<Napi::Buffer<uint8_t>>();
  auto frameAadPrefix = info[4].As<Napi::Buffer<uint8_t>>();
  auto finalAadPrefix = info[5].As<Napi::Buffer<uint8_t>>();
  if (frames.ElementLength() % 5 != 0) return Fail(env, "decryptFrames: frames must hold 5 numbers per frame");
  const size_t frameCount = frames.ElementLength() / 5;

  // Validate every descriptor before decrypting anything: all reads inside `input`, all writes inside `out`.
  const double inputLength = static_cast<double>(input.Length());
  uint64_t outNeeded = 0;
  for (size_t i = 0; i < frameCount; i++) {
    const double ivOffset = frames[i * 5], ciphertextOffset = frames[i * 5 + 1], contentLength = frames[i * 5 + 2];
    const double sequenceNumber = frames[i * 5 + 3], isFinal = frames[i * 5 + 4];
    auto integral = [](double v, double max) { return v >= 0 && v <= max && std::floor(v) == v; };
    if (!integral(ivOffset, inputLength - kIvLength) || !integral(contentLength, kSequenceNumberEnd) ||
        !integral(ciphertextOffset, inputLength) || ciphertextOffset + contentLength + kTagLength > inputLength ||
        !integral(sequenceNumber, kSequenceNumberEnd) || !(isFinal == 0 || isFinal == 1)) {
      return Fail(env, "decryptFrames: frame descriptor out of range");
    }
    outNeeded += static_cast<uint64_t>(contentLength);
  }
  if (outNeeded > out.Length()) return Fail(env, "decryptFrames: output buffer too small");

  CipherCtx ctx = NewContext(key.Data(), key.Length(), false);
  if (!ctx) return Fail(env, "decryptFrames: bad key length or OpenSSL failure");
  const size_t frameAadLength = frameAadPrefix.Length() + kAadTailLength;
  const size_t finalAadLength = finalAadPrefix.Length() + kAadTailLength;
  std::unique_ptr<uint8_t[]> frameAad(new uint8_t[frameAadLength]);
  std::unique_ptr<uint8_t[]> finalAad(new uint8_t[finalAadLength]);
  std::memcpy(frameAad.get(), frameAadPrefix.Data(), frameAadPrefix.Length());
  std::memcpy(finalAad.get(), finalAadPrefix.Data(), finalAadPrefix.Length());

  uint8_t* write = out.Data();
  for (size_t i = 0; i < frameCount; i++) {
    const size_t ivOffset = static_cast<size_t>(frames[i * 5]);
    const size_t ciphertextOffset = static_cast<size_t>(frames[i * 5 + 1]);
    const size_t contentLength = static_cast<size_t>(frames[i * 5 + 2]);
    const uint32_t sequenceNumber = static_cast<uint32_t>(frames[i * 5 + 3]);
    const bool isFinal = frames[i * 5 + 4] == 1;
    uint8_t* aad = isFinal ? finalAad.get() : frameAad.get();
    const size_t aadLength = isFinal ? finalAadLength : frameAadLength;
    FillAadTail(aad + aadLength - kAadTailLength, sequenceNumber, contentLength);
    const uint8_t* ciphertext = input.Data() + ciphertextOffset;
    if (!OpenFrame(ctx.get(), input.Data() + ivOffset, aad, aadLength, ciphertext, contentLength,
                   ciphertext + contentLength, write)) {
      return Napi::Number::New(env, static_cast<double>(i));
    }
    write += contentLength;
  }
  return Napi::Number::New(env, -1);
}

// openRegularFrames(key, input, start, end, firstSequenceNumber, frameLength, out, outOffset, frameAadPrefix)
//   -> frames opened (>= 0), or -(i + 1) when the tag of the i-th frame from `start` failed.
//
// The fast path of the decrypt loop for big messages: parses and opens, from input[start], consecutive
// regular frames  uint32 seq || IV || ciphertext (frameLength) || tag  whose sequence numbers are
// firstSequenceNumber, +1, ... and writes their plaintext back to back from out[outOffset]. It stops, without
// judging, at the first thing that is not such a frame: the end marker (the final frame), an unexpected
// sequence number, or a frame not wholly inside input[start, end). JavaScript's frame parser then reads that
// spot itself, so every refusal keeps its one message. Like decryptFrames, it stops at the first tag failure;
// plaintext written for earlier frames of the call must then be discarded.
Napi::Value OpenRegularFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 9 || !IsBuffer(info[0]) || !IsBuffer(info[1]) || !IsBuffer(info[6]) || !IsBuffer(info[8])) {
    return Fail(env, "openRegularFrames: bad arguments");
  }
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto input = info[1].As<Napi::Buffer<uint8_t>>();
  auto out = info[6].As<Napi::Buffer<uint8_t>>();
  auto frameAadPrefix = info[8].As<Napi::Buffer<uint8_t>>();
  size_t start, end, firstSequenceNumber, frameLength, outOffset;
  if (!ReadIndex(info[3], static_cast<double>(input.Length()), &end) || !ReadIndex(info[2], static_cast<double>(end), &start) ||
      !ReadIndex(info[4], kSequenceNumberEnd, &firstSequenceNumber) || firstSequenceNumber == 0 ||
      !ReadIndex(info[5], kSequenceNumberEnd, &frameLength) || frameLength == 0 ||
      !ReadIndex(info[7], static_cast<double>(out.Length()), &outOffset)) {
    return Fail(env, "openRegularFrames: offset, sequence number or frame length out of range");
  }
  const size_t frameBytes = 4 + kIvLength + frameLength + kTagLength;
  // Frames that fit both the input range and the room left in `out`.
  size_t limit = (end - start) / frameBytes;
  const size_t room = (out.Length() - outOffset) / frameLength;
  if (room < limit) limit = room;
  const uint8_t* read = input.Data() + start;
  size_t frames = 0;
  for (; frames < limit; frames++) {
    const uint8_t* frame = read + frames * frameBytes;
    const uint64_t expected = static_cast<uint64_t>(firstSequenceNumber) + frames;
    const uint32_t sequenceNumber = (static_cast<uint32_t>(frame[0]) << 24) | (static_cast<uint32_t>(frame[1]) << 16) |
                                    (static_cast<uint32_t>(frame[2]) << 8) | static_cast<uint32_t>(frame[3]);
    if (sequenceNumber == kSequenceNumberEnd || sequenceNumber != expected) break;
  }
  if (frames == 0) return Napi::Number::New(env, 0);

  CipherCtx ctx = NewContext(key.Data(), key.Length(), false);
  if (!ctx) return Fail(env, "openRegularFrames: bad key length or OpenSSL failure");
  const size_t aadLength = frameAadPrefix.Length() + kAadTailLength;
  std::unique_ptr<uint8_t[]> aad(new uint8_t[aadLength]);
  std::memcpy(aad.get(), frameAadPrefix.Data(), frameAadPrefix.Length());
  uint8_t* write = out.Data() + outOffset;
  for (size_t i = 0; i < frames; i++) {
    const uint8_t* frame = read + i * frameBytes;
    FillAadTail(aad.get() + aadLength - kAadTailLength, static_cast<uint32_t>(firstSequenceNumber + i), frameLength);
    const uint8_t* ciphertext = frame + 4 + kIvLength;
    if (!OpenFrame(ctx.get(), frame + 4, aad.get(), aadLength, ciphertext, frameLength, ciphertext + frameLength, write)) {
      return Napi::Number::New(env, -static_cast<double>(i + 1));
    }
    write += frameLength;
  }
  return Napi::Number::New(env, static_cast<double>(frames));
}

// gcmTag(key, iv, aad) -> 16-byte tag of an empty plaintext: the message header authentication. engine-js
// compares it with the SDK's own header auth to prove that the key it derived is the SDK's derived key.
Napi::Value GcmTag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !IsBuffer(info[0]) || !IsBuffer(info[1]) || !IsBuffer(info[2])) {
    return Fail(env, "gcmTag: bad arguments");
  }
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto iv = info[1].As<Napi::Buffer<uint8_t>>();
  auto aad = info[2].As<Napi::Buffer<uint8_t>>();
  if (iv.Length() != kIvLength) return Fail(env, "gcmTag: IV must be 12 bytes");
  if (aad.Length() > (1u << 30)) return Fail(env, "gcmTag: AAD too large");
  CipherCtx ctx = NewContext(key.Data(), key.Length(), true);
  if (!ctx) return Fail(env, "gcmTag: bad key length or OpenSSL failure");
  Napi::Buffer<uint8_t> tag = Napi::Buffer<uint8_t>::New(env, kTagLength);
  uint8_t unused[1];
  if (!SealFrame(ctx.get(), iv.Data(), aad.Data(), aad.Length(), unused, 0, unused, tag.Data())) {
    return Fail(env, "gcmTag: OpenSSL failure");
  }
  return tag;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("encryptFrames", Napi::Function::New(env, EncryptFrames, "encryptFrames"));
  exports.Set("decryptFrames", Napi::Function::New(env, DecryptFrames, "decryptFrames"));
  exports.Set("openRegularFrames", Napi::Function::New(env, OpenRegularFrames, "openRegularFrames"));
  exports.Set("gcmTag", Napi::Function::New(env, GcmTag, "gcmTag"));
  exports.Set("ivLength", Napi::Number::New(env, kIvLength));
  exports.Set("tagLength", Napi::Number::New(env, kTagLength));
  RegisterSmallFiles(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(envcrypt_frames, Init)
