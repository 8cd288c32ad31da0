#pragma once
// Running the `loopy` executable (or another program) as a user does, for the end-to-end tests.
#include <QProcess>
#include <QString>
#include <QStringList>

namespace loopy::test {

struct CliRun {
    int code = -1;  // -1: it did not finish within the time allowed
    QString out;
    QString err;
};

inline CliRun run_program(
    const QString& program, const QStringList& args, int timeout_ms = 120000,
    const QProcessEnvironment& env = QProcessEnvironment::systemEnvironment()) {
    QProcess p;
    p.setProcessEnvironment(env);
    p.start(program, args);
    if (!p.waitForFinished(timeout_ms)) return {};
    return {p.exitCode(), QString::fromUtf8(p.readAllStandardOutput()),
            QString::fromUtf8(p.readAllStandardError())};
}

inline CliRun loopy_cli(const QStringList& args, int timeout_ms = 120000) {
    return run_program(QString(LOOPY_BINARY_DIR) + "/app/loopy", args, timeout_ms);
}

}  // namespace loopy::test
