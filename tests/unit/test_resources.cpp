// The bundled-data search (core/resources.h): LOOPY_DATA_DIR first, then the installed layout,
// then resources/ next to the executable, then the source tree.
#include <QtTest>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/resources.h"

namespace fs = std::filesystem;

namespace {
void touch(const fs::path& file) {
    fs::create_directories(file.parent_path());
    std::ofstream(file) << "x";
}
}  // namespace

class ResourcesTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void init() { qunsetenv("LOOPY_DATA_DIR"); }
    void cleanup() { qunsetenv("LOOPY_DATA_DIR"); }

    void searchOrderWithoutOverride() {
        const auto dirs = loopy::data_dirs("/opt/loopy/bin/loopy");
        QVERIFY(dirs.size() >= 2);
        QCOMPARE(QString::fromStdString(dirs[0]), QString("/opt/loopy/share/loopy-studio"));
        QCOMPARE(QString::fromStdString(dirs[1]), QString("/opt/loopy/bin/resources"));
        // The source tree comes last, after every place relative to the executable.
        QVERIFY(dirs.back() != dirs[0]);
    }

    void overrideComesFirst() {
        qputenv("LOOPY_DATA_DIR", "/data/custom/");
        const auto dirs = loopy::data_dirs("/usr/bin/loopy");
        QVERIFY(dirs.size() >= 3);
        QCOMPARE(QString::fromStdString(dirs[0]), QString("/data/custom/"));
        QCOMPARE(QString::fromStdString(dirs[1]), QString("/usr/share/loopy-studio"));
        qputenv("LOOPY_DATA_DIR", "");  // empty means unset
        QCOMPARE(QString::fromStdString(loopy::data_dirs("/usr/bin/loopy")[0]),
                 QString("/usr/share/loopy-studio"));
    }

    void runningExecutableIsKnown() {
        const std::string exe = loopy::executable_path();
        QVERIFY(fs::path(exe).filename() == "test_resources");
        const auto dirs = loopy::data_dirs();
        QCOMPARE(dirs.front(), loopy::data_dirs(exe).front());
    }

    void findsInstalledLayoutThenOverride() {
        QTemporaryDir tmp;
        QVERIFY(tmp.isValid());
        const fs::path root = tmp.path().toStdString();
        const fs::path installed = root / "usr/share/loopy-studio" / loopy::kDemoCheckpoint;
        touch(installed);
        touch(root / "usr/bin/resources" / loopy::kDemoCheckpoint);
        const std::string exe = (root / "usr/bin/loopy").string();

        QCOMPARE(loopy::find_data_file(loopy::kDemoCheckpoint, loopy::data_dirs(exe)),
                 installed.string());

        // An override without the file falls through to the installed copy ...
        qputenv("LOOPY_DATA_DIR", (root / "empty").string().c_str());
        QCOMPARE(loopy::find_data_file(loopy::kDemoCheckpoint, loopy::data_dirs(exe)),
                 installed.string());
        // ... one with it wins, and default_checkpoint() (the running test binary) sees it too.
        const fs::path own = root / "mine" / loopy::kDemoCheckpoint;
        touch(own);
        qputenv("LOOPY_DATA_DIR", (root / "mine").string().c_str());
        QCOMPARE(loopy::find_data_file(loopy::kDemoCheckpoint, loopy::data_dirs(exe)),
                 own.string());
        QCOMPARE(loopy::default_checkpoint(), own.string());
        QCOMPARE(loopy::checkpoint_or_default(""), own.string());
        QCOMPARE(loopy::checkpoint_or_default("given.safetensors"),
                 std::string("given.safetensors"));
    }

    void directoriesAreNotFiles() {
        QTemporaryDir tmp;
        fs::create_directories(fs::path(tmp.path().toStdString()) / "models/x.safetensors");
        QVERIFY(loopy::find_data_file("models/x.safetensors", {tmp.path().toStdString()}).empty());
    }

    void missingFileNamesEveryPlace() {
        qputenv("LOOPY_DATA_DIR", "/nonexistent/loopy-data");
        const std::string message = loopy::describe_missing_data_file("models/none.safetensors");
        for (const auto& dir : loopy::data_dirs())
            QVERIFY2(message.find(dir) != std::string::npos, message.c_str());
        QVERIFY(message.find("models/none.safetensors") != std::string::npos);
        QVERIFY(loopy::find_data_file("models/none.safetensors").empty());
    }
};

QTEST_GUILESS_MAIN(ResourcesTest)
#include "test_resources.moc"
