// The safetensors parser accepts well-formed files and rejects every malformed one with a message
// that names the file, the tensor and the rule.
#include <QtTest>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/safetensors.h"

using namespace loopy::safetensors;

namespace {

// Headers are written with single quotes for readability (and because moc cannot read raw
// string literals); they become double quotes here.
std::vector<uint8_t> with_header(std::string json, std::size_t buffer_bytes,
                                 uint64_t declared_length = UINT64_MAX) {
    for (char& c : json)
        if (c == '\'') c = '"';
    const uint64_t n = declared_length == UINT64_MAX ? json.size() : declared_length;
    std::vector<uint8_t> out(8);
    for (int i = 0; i < 8; ++i)
        out[i] = static_cast<uint8_t>(n >> (8 * i));
    out.insert(out.end(), json.begin(), json.end());
    out.resize(out.size() + buffer_bytes, 0x42);
    return out;
}

// Parses and returns the error message ("" if it parsed).
std::string rejection(const std::vector<uint8_t>& bytes) {
    try {
        parse(bytes.data(), bytes.size(), "bad.safetensors");
    } catch (const loopy::Error& e) {
        return e.what();
    }
    return {};
}

const char* kTwoTensors =
    "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
    "'b':{'dtype':'I64','shape':[1],'data_offsets':[8,16]}}";

}  // namespace

class SafetensorsTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void acceptsWellFormed() {
        const auto bytes = with_header(
            "{'__metadata__':{'k':'v'},'b':{'dtype':'I64','shape':[1],'data_offsets':[8,16]},"
            "'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}",
            16);
        const Header h = parse(bytes.data(), bytes.size(), "ok.safetensors");
        QCOMPARE(h.tensors.size(), std::size_t(2));
        QCOMPARE(h.tensors[0].name, std::string("a"));  // sorted by offset
        QCOMPARE(h.metadata.at("k"), std::string("v"));
        QVERIFY(h.find("b") && h.find("b")->dtype == DType::I64);
    }

    void acceptsEveryDtypeAndEmptyTensors() {
        for (const char* name :
             {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}) {
            const auto dt = parse_dtype(name);
            QVERIFY(dt.has_value());
            const std::size_t size = dtype_size(*dt);
            const std::string json = std::string("{'x':{'dtype':'") + name +
                                     "','shape':[3],'data_offsets':[0," + std::to_string(3 * size) +
                                     "]},'e':{'dtype':'F32','shape':[0,4],'data_offsets':[0,0]}}";
            const auto bytes = with_header(json, 3 * size);
            QCOMPARE(parse(bytes.data(), bytes.size(), "f").tensors.size(), std::size_t(2));
        }
    }

    void rejects_data() {
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<QString>("expected");
        auto row = [](const char* name, const std::vector<uint8_t>& b, const char* expected) {
            QTest::newRow(name) << QByteArray(reinterpret_cast<const char*>(b.data()),
                                              static_cast<int>(b.size()))
                                << QString(expected);
        };
        row("empty file", {}, "too small");
        row("7-byte file", std::vector<uint8_t>(7, 0), "too small");
        row("header length 0xFFFFFFFFFFFFFFFF", with_header("{}", 0, UINT64_MAX - 1),
            "exceeds the 100 MB limit");
        {
            auto b = with_header("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 4);
            const uint64_t n = b.size() - 8;
            for (int i = 0; i < 8; ++i)
                b[i] = static_cast<uint8_t>(n >> (8 * i));
            row("header length = file size - 8", b, "not valid JSON");
        }
        row("header longer than file", with_header("{}", 0, 64), "runs past the end");
        row("header not JSON", with_header("{not json", 0), "not valid JSON");
        row("header a JSON array", with_header("[1,2]", 0), "not a JSON object");
        row("non-UTF-8 header", with_header("{\"\xff\xfe\":1}", 0), "not valid UTF-8");
        row("overlong UTF-8", with_header("{\"\xc0\xaf\":1}", 0), "not valid UTF-8");
        row("duplicate key",
            with_header("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
                        "'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}",
                        4),
            "'a' more than once");
        row("unknown dtype",
            with_header("{'a':{'dtype':'F7','shape':[1],'data_offsets':[0,4]}}", 4),
            "tensor 'a': unknown dtype 'F7'");
        row("byte count overflows",
            with_header("{'a':{'dtype':'F32','shape':[4294967296,4294967296],"
                        "'data_offsets':[0,4]}}",
                        4),
            "tensor 'a': shape's element count overflows");
        row("byte size overflows after dtype",
            with_header("{'a':{'dtype':'F64','shape':[4611686018427387904],"
                        "'data_offsets':[0,8]}}",
                        8),
            "tensor 'a': shape's byte size overflows");
        row("negative dimension",
            with_header("{'a':{'dtype':'F32','shape':[-1],'data_offsets':[0,4]}}", 4),
            "non-negative");
        row("end < begin", with_header("{'a':{'dtype':'F32','shape':[0],'data_offsets':[4,0]}}", 4),
            "tensor 'a': data_offsets end < begin");
        row("size mismatch",
            with_header("{'a':{'dtype':'F32','shape':[3],'data_offsets':[0,8]}}", 8),
            "tensor 'a': shape and dtype need 12 bytes");
        row("gap between tensors",
            with_header("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
                        "'b':{'dtype':'F32','shape':[1],'data_offsets':[8,12]}}",
                        12),
            "tensor 'b': gap in the data buffer");
        row("overlapping tensors",
            with_header("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                        "'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]}}",
                        12),
            "tensor 'b': overlaps tensor 'a'");
        row("two tensors with the same offsets",
            with_header("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
                        "'b':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}",
                        4),
            "overlaps tensor");
        row("first tensor not at 0",
            with_header("{'a':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}", 8),
            "tensor 'a': gap");
        row("trailing bytes", with_header(kTwoTensors, 20), "4 trailing bytes");
        row("truncated buffer", with_header(kTwoTensors, 12),
            "tensor 'b': data ends at 16 but the buffer has only 12 bytes");
        row("metadata with a non-string value", with_header("{'__metadata__':{'k':1}}", 0),
            "__metadata__ value of 'k'");
        row("metadata not an object", with_header("{'__metadata__':[]}", 0),
            "__metadata__ is not a JSON object");
        row("entry not an object", with_header("{'a':5}", 0), "tensor 'a': entry");
        row("missing data_offsets", with_header("{'a':{'dtype':'F32','shape':[0]}}", 0),
            "tensor 'a': missing 'data_offsets'");
        row("offsets not a pair",
            with_header("{'a':{'dtype':'F32','shape':[0],'data_offsets':[0]}}", 0),
            "tensor 'a': data_offsets must be");
        {
            std::vector<uint8_t> pk = {'P', 'K', 3, 4, 20, 0, 0, 0, 8, 0, 0x5c, 0x7a};
            pk.resize(600, 0);
            row("pickle .ckpt (zip) renamed", pk, "PyTorch .ckpt/.pt zip archive");
        }
        {
            std::vector<uint8_t> pickle = {0x80, 0x02, 0x7d, 0x71, 0x00, 0x28, 0x58, 0x05};
            pickle.resize(300, 0x41);
            row("raw pickle renamed", pickle, "Python pickle");
        }
    }
    void rejects() {
        QFETCH(QByteArray, bytes);
        QFETCH(QString, expected);
        const std::vector<uint8_t> data(bytes.begin(), bytes.end());
        const std::string message = rejection(data);
        QVERIFY2(!message.empty(), "malformed file was accepted");
        QVERIFY2(message.rfind("bad.safetensors: ", 0) == 0, message.c_str());
        QVERIFY2(message.find(expected.toStdString()) != std::string::npos, message.c_str());
    }

    void writerRoundTripsAndIsAtomic() {
        QTemporaryDir dir;
        const std::string path = dir.filePath("w.safetensors").toStdString();
        const float a[3] = {1.f, 2.f, 3.f};
        const int64_t b[2] = {-5, 7};
        write(path, {{"b", DType::I64, {2}, b, sizeof(b)}, {"a", DType::F32, {3}, a, sizeof(a)}},
              {{"format", "pt"}});
        const File f = File::open(path);
        QCOMPARE(f.header.metadata.at("format"), std::string("pt"));
        QCOMPARE(f.header.data_start % 8, uint64_t(0));
        const TensorInfo* ta = f.header.find("a");
        QVERIFY(ta);
        QVERIFY(std::memcmp(f.tensor_data(*ta), a, sizeof(a)) == 0);
        QVERIFY(std::memcmp(f.tensor_data(*f.header.find("b")), b, sizeof(b)) == 0);
        // A failing write (inconsistent sizes) leaves neither a partial file nor a temp file.
        const std::string bad = dir.filePath("bad.safetensors").toStdString();
        QVERIFY_THROWS_EXCEPTION(loopy::Error, write(bad, {{"x", DType::F32, {4}, a, sizeof(a)}}));
        QCOMPARE(QDir(dir.path()).entryList(QDir::Files | QDir::Hidden).size(), 1);
    }

    void unwritableFolderIsAClearError() {
        const float a[1] = {1.f};
        try {
            write("/proc/loopy-nope/x.safetensors", {{"a", DType::F32, {1}, a, sizeof(a)}});
            QFAIL("write into a missing folder succeeded");
        } catch (const loopy::Error& e) {
            QVERIFY2(
                std::string(e.what()).find("cannot create a temporary file") != std::string::npos,
                e.what());
        }
    }

    void missingFileIsAClearError() {
        try {
            File::open("/nonexistent/file.safetensors");
            QFAIL("opened a missing file");
        } catch (const loopy::Error& e) {
            QVERIFY(std::string(e.what()).find("/nonexistent/file.safetensors: cannot open") == 0);
        }
    }
};

QTEST_APPLESS_MAIN(SafetensorsTest)
#include "test_safetensors.moc"
