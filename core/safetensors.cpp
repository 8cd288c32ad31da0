#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace loopy::safetensors {
namespace {

using nlohmann::json;

struct DTypeEntry {
    DType dtype;
    std::string_view name;
    std::size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},     {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2},   {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},   {DType::I64, "I64", 8},   {DType::U64, "U64", 8},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},
};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
    throw Error(source + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& source, const std::string& tensor,
                              const std::string& what) {
    throw Error(source + ": tensor '" + tensor + "': " + what);
}

// Strict UTF-8 check (no overlongs, no surrogates, max U+10FFFF).
bool valid_utf8(const uint8_t* s, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
        const uint8_t c = s[i];
        std::size_t len = 0;
        uint32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) return false;
        for (std::size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
            return false;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

// Parses JSON, rejecting duplicate keys in any object (nlohmann would keep the last silently).
json parse_json_rejecting_duplicates(std::string_view text, const std::string& source) {
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
                open_objects.emplace_back();
                break;
            case json::parse_event_t::object_end:
                if (!open_objects.empty()) open_objects.pop_back();
                break;
            case json::parse_event_t::key: {
                const auto& key = parsed.get_ref<const std::string&>();
                if (!open_objects.empty() && !open_objects.back().insert(key).second &&
                    duplicate.empty())
                    duplicate = key;
                break;
            }
            default:
                break;
        }
        return true;
    };
    json j;
    try {
        j = json::parse(text.begin(), text.end(), callback);
    } catch (const json::parse_error& e) {
        fail(source, std::string("header is not valid JSON (") + e.what() + ")");
    }
    if (!duplicate.empty()) fail(source, "header has the key '" + duplicate + "' more than once");
    return j;
}

uint64_t checked_byte_size(const TensorInfo& t, const std::string& source) {
    uint64_t count = 1;
    for (int64_t d : t.shape) {
        if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count))
            fail_tensor(source, t.name, "shape's element count overflows 64 bits");
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(t.dtype)), &bytes))
        fail_tensor(source, t.name, "shape's byte size overflows 64 bits");
    return bytes;
}

uint64_t as_u64(const json& v, const std::string& source, const std::string& tensor,
                const char* field) {
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
        fail_tensor(source, tensor, std::string(field) + " must hold non-negative integers");
    return v.get<uint64_t>();
}

TensorInfo parse_tensor_entry(const std::string& name, const json& v, const std::string& source) {
    if (!v.is_object()) fail_tensor(source, name, "entry is not a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!v.contains(field)) fail_tensor(source, name, std::string("missing '") + field + "'");
    TensorInfo t;
    t.name = name;
    const json& dt = v["dtype"];
    if (!dt.is_string()) fail_tensor(source, name, "dtype is not a string");
    auto parsed = parse_dtype(dt.get<std::string>());
    if (!parsed) fail_tensor(source, name, "unknown dtype '" + dt.get<std::string>() + "'");
    t.dtype = *parsed;
    const json& shape = v["shape"];
    if (!shape.is_array()) fail_tensor(source, name, "shape is not an array");
    for (const json& d : shape) {
        uint64_t dim = as_u64(d, source, name, "shape");
        if (dim > static_cast<uint64_t>(INT64_MAX))
            fail_tensor(source, name, "shape dimension exceeds int64");
        t.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2)
        fail_tensor(source, name, "data_offsets must be an array [begin, end]");
    t.begin = as_u64(off[0], source, name, "data_offsets");
    t.end = as_u64(off[1], source, name, "data_offsets");
    if (t.end < t.begin) fail_tensor(source, name, "data_offsets end < begin");
    const uint64_t bytes = checked_byte_size(t, source);
    if (bytes != t.end - t.begin)
        fail_tensor(source, name,
                    "shape and dtype need " + std::to_string(bytes) +
                        " bytes but data_offsets span " + std::to_string(t.end - t.begin));
    return t;
}

std::map<std::string, std::string> parse_metadata(const json& v, const std::string& source) {
    if (!v.is_object()) fail(source, "__metadata__ is not a JSON object");
    std::map<std::string, std::string> out;
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_string())
            fail(source, "__metadata__ value of '" + it.key() + "' is not a string");
        out[it.key()] = it.value().get<std::string>();
    }
    return out;
}

// Buffers must be packed: sorted by offset, starting at 0, each beginning where the last ended,
// the last ending exactly at the end of the file.
void check_layout(std::vector<TensorInfo>& tensors, uint64_t buffer_size,
                  const std::string& source) {
    std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t expected = 0;
    const TensorInfo* previous = nullptr;
    for (const TensorInfo& t : tensors) {
        if (t.begin > expected)
            fail_tensor(source, t.name,
                        "gap in the data buffer: starts at " + std::to_string(t.begin) +
                            " but the previous tensor ends at " + std::to_string(expected));
        if (t.begin < expected)
            fail_tensor(source, t.name,
                        "overlaps tensor '" + (previous ? previous->name : std::string()) +
                            "' in the data buffer");
        if (t.end > buffer_size)
            fail_tensor(source, t.name,
                        "data ends at " + std::to_string(t.end) + " but the buffer has only " +
                            std::to_string(buffer_size) + " bytes (file truncated?)");
        expected = t.end;
        previous = &t;
    }
    if (expected != buffer_size)
        fail(source, std::to_string(buffer_size - expected) +
                         " trailing bytes after the last tensor's data (buffer must end at the "
                         "end of the file)");
}

std::string describe_foreign_format(const uint8_t* data, std::size_t size) {
    if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0)
        return " (this looks like a PyTorch .ckpt/.pt zip archive, not safetensors: convert it "
               "with safetensors' tools first)";
    if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
        return " (this looks like a Python pickle, not safetensors: convert it first)";
    return "";
}

}  // namespace

std::optional<DType> parse_dtype(std::string_view name) {
    for (const auto& e : kDTypes)
        if (e.name == name) return e.dtype;
    return std::nullopt;
}

std::string_view dtype_name(DType dtype) {
    for (const auto& e : kDTypes)
        if (e.dtype == dtype) return e.name;
    return "?";
}

std::size_t dtype_size(DType dtype) {
    for (const auto& e : kDTypes)
        if (e.dtype == dtype) return e.size;
    return 0;
}

const TensorInfo* Header::find(std::string_view name) const {
    for (const auto& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

Header parse(const uint8_t* data, std::size_t size, const std::string& source) {
    if (size < 8)
        fail(source, "file has " + std::to_string(size) +
                         " bytes, too small for the 8-byte header length" +
                         describe_foreign_format(data, size));
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i)
        n = (n << 8) | data[i];
    if (n > kMaxHeaderBytes)
        fail(source, "header length " + std::to_string(n) + " exceeds the 100 MB limit" +
                         describe_foreign_format(data, size));
    if (n > size - 8)
        fail(source, "header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(size) + " bytes)");
    const uint8_t* text = data + 8;
    if (!valid_utf8(text, n)) fail(source, "header is not valid UTF-8");
    if (n == 0 || text[0] != '{') fail(source, "header is not a JSON object (must start with '{')");
    json j = parse_json_rejecting_duplicates(
        std::string_view(reinterpret_cast<const char*>(text), n), source);
    if (!j.is_object()) fail(source, "header is not a JSON object");

    Header header;
    header.data_start = 8 + n;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "__metadata__")
            header.metadata = parse_metadata(it.value(), source);
        else
            header.tensors.push_back(parse_tensor_entry(it.key(), it.value(), source));
    }
    check_layout(header.tensors, size - header.data_start, source);
    return header;
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(path + ": not a regular file");
    }
    std::shared_ptr<MappedFile> file(new MappedFile());
    file->path_ = path;
    file->size_ = static_cast<std::size_t>(st.st_size);
    if (file->size_ > 0) {
        void* p = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            throw Error(path + ": cannot map (" + std::strerror(err) + ")");
        }
        file->data_ = static_cast<uint8_t*>(p);
    }
    ::close(fd);
    return file;
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(data_, size_);
}

File File::open(const std::string& path) {
    File f;
    f.mapping = MappedFile::open(path);
    f.header = parse(f.mapping->data(), f.mapping->size(), path);
    return f;
}

namespace {

std::vector<const TensorView*> sorted_by_name(const std::vector<TensorView>& tensors) {
    std::vector<const TensorView*> ordered;
    for (const auto& t : tensors)
        ordered.push_back(&t);
    std::sort(ordered.begin(), ordered.end(),
              [](const TensorView* a, const TensorView* b) { return a->name < b->name; });
    return ordered;
}

// The 8-byte length prefix and the JSON header, padded with spaces to keep the buffer aligned.
std::string serialize_header(const std::vector<const TensorView*>& ordered,
                             const std::map<std::string, std::string>& metadata,
                             uint64_t* buffer_size) {
    json header = json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const TensorView* t : ordered) {
        if (t->name == "__metadata__") throw Error("safetensors: '__metadata__' is reserved");
        if (header.contains(t->name))
            throw Error("safetensors: duplicate tensor '" + t->name + "'");
        uint64_t expected = dtype_size(t->dtype);
        for (int64_t d : t->shape)
            expected *= static_cast<uint64_t>(d);
        if (expected != t->nbytes)
            throw Error("safetensors: tensor '" + t->name + "' has " + std::to_string(t->nbytes) +
                        " bytes, its shape needs " + std::to_string(expected));
        header[t->name] = {{"dtype", std::string(dtype_name(t->dtype))},
                           {"shape", t->shape},
                           {"data_offsets", {offset, offset + t->nbytes}}};
        offset += t->nbytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    const uint64_t n = text.size();
    for (int i = 0; i < 8; ++i)
        out[i] = static_cast<char>(n >> (8 * i));
    *buffer_size = offset;
    return out + text;
}

}  // namespace

std::vector<uint8_t> serialize(const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata) {
    const auto ordered = sorted_by_name(tensors);
    uint64_t buffer_size = 0;
    const std::string head = serialize_header(ordered, metadata, &buffer_size);
    std::vector<uint8_t> out(head.begin(), head.end());
    out.reserve(head.size() + buffer_size);
    for (const TensorView* t : ordered) {
        const auto* p = static_cast<const uint8_t*>(t->data);
        out.insert(out.end(), p, p + t->nbytes);
    }
    return out;
}

void write(const std::string& path, const std::vector<TensorView>& tensors,
           const std::map<std::string, std::string>& metadata) {
    const auto ordered = sorted_by_name(tensors);
    uint64_t buffer_size = 0;
    const std::string head = serialize_header(ordered, metadata, &buffer_size);
    AtomicFile file(path);
    file.write(head.data(), head.size());
    for (const TensorView* t : ordered)
        file.write(t->data, t->nbytes);
    file.commit();
}

}  // namespace loopy::safetensors
