#include "audio/virtual_mic.h"

#include <QDeadlineTimer>
#include <QDir>
#include <QFile>
#include <QStandardPaths>
#include <QThread>

#include <csignal>
#include <stdexcept>

namespace loopy::test {

namespace {

// Debian's ALSA configuration root; ALSA_CONFIG_PATH replaces it, so ours must name it first.
constexpr const char* kAlsaConf = "/usr/share/alsa/alsa.conf";

void write_file(const QString& path, const QByteArray& text) {
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly) || f.write(text) != text.size())
        throw std::runtime_error("virtual microphone: cannot write " + path.toStdString());
}

// True while `pid` is a live (not zombie) process. The daemon is reparented when it forks, and a
// container's init may never reap it, so a zombie counts as gone.
bool process_alive(qint64 pid) {
    QFile stat(QString("/proc/%1/stat").arg(pid));
    if (!stat.open(QIODevice::ReadOnly)) return false;
    const QByteArray line = stat.readAll();
    const int paren = line.lastIndexOf(')');
    return paren >= 0 && line.size() > paren + 2 && line[paren + 2] != 'Z';
}

bool wait_gone(qint64 pid, int timeout_ms) {
    QDeadlineTimer deadline(timeout_ms);
    while (process_alive(pid)) {
        if (deadline.hasExpired()) return false;
        QThread::msleep(20);
    }
    return true;
}

}  // namespace

ScopedEnv::~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
        if (it->second)
            qputenv(it->first.constData(), *it->second);
        else
            qunsetenv(it->first.constData());
    }
}

void ScopedEnv::set(const char* name, const QByteArray& value) {
    std::optional<QByteArray> old;
    if (qEnvironmentVariableIsSet(name)) old = qgetenv(name);
    saved_.emplace_back(name, old);
    qputenv(name, value);
}

QString VirtualMicrophone::missing_programs() {
    QStringList missing;
    for (const char* p : {"pulseaudio", "pactl", "paplay", "espeak-ng"})
        if (QStandardPaths::findExecutable(p).isEmpty()) missing << p;
    return missing.join(", ");
}

VirtualMicrophone::VirtualMicrophone() : dir_(QDir::tempPath() + "/loopy-vmic-XXXXXX") {
    if (!dir_.isValid()) throw std::runtime_error("virtual microphone: no temporary directory");
    socket_ = dir_.filePath("native");  // short path: a unix socket name has ~100 bytes
    start_daemon();
    try {
        // Clients of this process (the ALSA pulse plugin, pactl, paplay) find the daemon here.
        env_.set("PULSE_SERVER", "unix:" + socket_.toUtf8());
        env_.set("JACK_NO_START_SERVER", "1");
        run("pactl", {"set-default-source", QString(kSink) + ".monitor"});
        route_alsa_to_pulse();
    } catch (...) {
        stop_daemon();
        throw;
    }
}

VirtualMicrophone::~VirtualMicrophone() {
    if (player_ && player_->state() != QProcess::NotRunning) {
        player_->kill();  // a QProcess this fixture started
        player_->waitForFinished(2000);
    }
    stop_daemon();
}

// The daemon runs with its own runtime dir and home, loads only what the tests need (-n: no
// default.pa, so no hardware modules), and accepts anonymous clients on a socket in our 0700 dir.
// As root PulseAudio warns that it is "not intended to be run as root" but works in user mode.
void VirtualMicrophone::start_daemon() {
    const QString runtime = dir_.filePath("runtime");
    const QString home = dir_.filePath("home");
    QDir().mkpath(runtime);
    QDir().mkpath(home);
    QFile::setPermissions(runtime, QFile::ReadOwner | QFile::WriteOwner | QFile::ExeOwner);

    QProcess daemon;
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert("XDG_RUNTIME_DIR", runtime);
    env.insert("HOME", home);
    env.insert("XDG_CONFIG_HOME", home + "/.config");
    env.remove("PULSE_SERVER");
    daemon.setProcessEnvironment(env);
    daemon.setProcessChannelMode(QProcess::MergedChannels);
    const QString null_sink = QString("module-null-sink sink_name=%1 rate=48000").arg(kSink);
    const QString protocol =
        QString("module-native-protocol-unix auth-anonymous=1 socket=%1").arg(socket_);
    daemon.start("pulseaudio", {"--daemonize=yes", "--exit-idle-time=-1", "--system=false", "-n",
                                "--use-pid-file=yes", "--log-target=file:" + dir_.filePath("log"),
                                "--load=" + null_sink, "--load=" + protocol});
    // With --daemonize the command returns once the daemon has started (or failed to).
    if (!daemon.waitForFinished(20000) || daemon.exitCode() != 0)
        throw std::runtime_error("virtual microphone: pulseaudio did not start: " +
                                 daemon.readAll().toStdString() + log().toStdString());
    QFile pid_file(runtime + "/pulse/pid");
    if (pid_file.open(QIODevice::ReadOnly)) pid_ = pid_file.readAll().trimmed().toLongLong();

    // Ready when a client can talk to it.
    QDeadlineTimer deadline(10000);
    for (;;) {
        QProcess info;
        QProcessEnvironment client = QProcessEnvironment::systemEnvironment();
        client.insert("PULSE_SERVER", "unix:" + socket_);
        info.setProcessEnvironment(client);
        info.start("pactl", {"info"});
        if (info.waitForFinished(5000) && info.exitCode() == 0) return;
        if (deadline.hasExpired()) {
            stop_daemon();
            throw std::runtime_error("virtual microphone: pulseaudio does not answer: " +
                                     log().toStdString());
        }
        QThread::msleep(50);
    }
}

void VirtualMicrophone::stop_daemon() {
    if (pid_ <= 0) return;
    QProcess exit_request;  // a polite exit first
    QProcessEnvironment client = QProcessEnvironment::systemEnvironment();
    client.insert("PULSE_SERVER", "unix:" + socket_);
    exit_request.setProcessEnvironment(client);
    exit_request.start("pactl", {"exit"});
    exit_request.waitForFinished(5000);
    if (!wait_gone(pid_, 5000)) {
        ::kill(static_cast<pid_t>(pid_), SIGTERM);  // only the daemon this fixture started
        if (!wait_gone(pid_, 3000)) ::kill(static_cast<pid_t>(pid_), SIGKILL);
    }
    pid_ = 0;
}

// ALSA_CONFIG_PATH = the standard configuration + a file that makes "default" the pulse plugin.
// (pulseaudio's own /etc/alsa/conf.d/99-pulse.conf does the same when it sees a daemon running,
// but only for its standard socket and only when ALSA loads its configuration; this does not
// depend on either.)
void VirtualMicrophone::route_alsa_to_pulse() {
    QByteArray base = qgetenv("ALSA_CONFIG_PATH");
    if (base.isEmpty() && QFile::exists(kAlsaConf)) base = kAlsaConf;
    if (base.isEmpty()) return;  // a non-Debian layout: rely on the pulse hook
    const QString route = dir_.filePath("asound-pulse.conf");
    write_file(route,
               "pcm.!default { type pulse }\n"
               "ctl.!default { type pulse }\n");
    env_.set("ALSA_CONFIG_PATH", base + ":" + route.toUtf8());
}

QString VirtualMicrophone::run(const QString& program, const QStringList& args,
                               int timeout_ms) const {
    QProcess p;
    p.setProcessChannelMode(QProcess::MergedChannels);
    p.start(program, args);
    const bool ok = p.waitForFinished(timeout_ms) && p.exitStatus() == QProcess::NormalExit &&
                    p.exitCode() == 0;
    const QString output = QString::fromLocal8Bit(p.readAll());
    if (!ok)
        throw std::runtime_error(QString("virtual microphone: %1 %2 failed: %3")
                                     .arg(program, args.join(' '), output)
                                     .toStdString());
    return output;
}

QString VirtualMicrophone::speak(const QString& text, const QString& name) {
    const QString wav = dir_.filePath(name + ".wav");
    run("espeak-ng", {"-w", wav, text}, 30000);
    return wav;
}

void VirtualMicrophone::play(const QString& wav) {
    player_ = std::make_unique<QProcess>();
    player_->setProcessChannelMode(QProcess::MergedChannels);
    player_->start("paplay", {"-d", kSink, wav});
    if (!player_->waitForStarted(5000))
        throw std::runtime_error("virtual microphone: paplay does not start");
}

bool VirtualMicrophone::wait_played(int timeout_ms) {
    if (!player_) throw std::runtime_error("virtual microphone: nothing is playing");
    if (player_->state() != QProcess::NotRunning && !player_->waitForFinished(timeout_ms))
        return false;
    if (player_->exitStatus() != QProcess::NormalExit || player_->exitCode() != 0)
        throw std::runtime_error("virtual microphone: paplay failed: " +
                                 player_->readAll().toStdString() + log().toStdString());
    return true;
}

QString VirtualMicrophone::log() const {
    QFile f(dir_.filePath("log"));
    return f.open(QIODevice::ReadOnly) ? "\n--- pulseaudio log ---\n" + f.readAll() : QString();
}

NoAudioDevices::NoAudioDevices() {
    if (!dir_.isValid()) throw std::runtime_error("NoAudioDevices: no temporary directory");
    const QString conf = dir_.filePath("asound-none.conf");
    write_file(conf, "pcm.loopy_no_device { type hw card 99 }\n");
    env_.set("ALSA_CONFIG_PATH", conf.toUtf8());
    env_.set("PULSE_SERVER", "unix:" + dir_.filePath("no-such-socket").toUtf8());
    env_.set("JACK_NO_START_SERVER", "1");
}

}  // namespace loopy::test
