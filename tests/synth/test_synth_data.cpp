// The synthetic talking-face data: espeak-ng speech and visemes, drawn faces and their mouth
// colour, motion statistics, clip determinism, the files a clip and a dataset are written as.
#include <QtTest>

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <opencv2/imgcodecs.hpp>

#include "render/eval_metrics.h"
#include "render/synth_dataset.h"
#include "render/synth_face.h"
#include "render/synth_motion.h"
#include "render/synth_speech.h"
#include "render/video_probe.h"
#include "test_util.h"

using namespace loopy::synth;
namespace eval = loopy::eval;
namespace fs = std::filesystem;

namespace {

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

QJsonObject read_json(const std::string& path) {
    const std::string text = read_bytes(path);
    QJsonParseError error;
    const auto doc = QJsonDocument::fromJson(QByteArray::fromStdString(text), &error);
    if (error.error != QJsonParseError::NoError) qWarning() << path.c_str() << error.errorString();
    return doc.object();
}

ClipOptions small_clip(double seconds) {
    ClipOptions o;
    o.size = 128;
    o.seconds = seconds;
    o.write_mp4 = false;
    return o;
}

long mouth_pixels(const cv::Mat& rgb) {
    long n = 0;
    for (int y = 0; y < rgb.rows; ++y)
        for (int x = 0; x < rgb.cols; ++x) {
            const auto p = rgb.at<cv::Vec3b>(y, x);
            n += is_mouth_interior(p[0], p[1], p[2]);
        }
    return n;
}

}  // namespace

class SynthDataTest : public QObject {
    Q_OBJECT

  private Q_SLOTS:
    // espeak-ng 1.52 (Debian trixie) names phoneme events with their stress mark, 1.51 without.
    void phonemeEventNamesLoseTheirStressMarks() {
        const auto stressed = phoneme_from_event_name("'oU");
        QCOMPARE(stressed.name, std::string("oU"));
        QCOMPARE(stressed.stress, 2);
        QCOMPARE(phoneme_from_event_name(",a").stress, 1);
        QCOMPARE(phoneme_from_event_name(",a").name, std::string("a"));
        QCOMPARE(phoneme_from_event_name("D").name, std::string("D"));
        QCOMPARE(phoneme_from_event_name("D").stress, 0);
        QVERIFY(phoneme_from_event_name("").is_pause());
    }

    void speechHasPhonemesInOrderAndSound() {
        const Speech s = synthesize_speech(random_speech_options(7, 2.0));
        QVERIFY(s.seconds() > 1.0);
        QVERIFY(s.phonemes.size() > 10);
        int stressed = 0;
        for (size_t i = 0; i < s.phonemes.size(); ++i) {
            QVERIFY(s.phonemes[i].end > s.phonemes[i].start);
            if (i > 0) QVERIFY(s.phonemes[i].start >= s.phonemes[i - 1].end);
            stressed += s.phonemes[i].stress == 2;
        }
        QVERIFY(s.phonemes.back().start > s.phonemes.front().start);
        QVERIFY2(stressed > 0, "espeak's stress marks should reach the phonemes");
        double energy = 0, peak = 0;
        for (float x : s.samples) {
            energy += x * x;
            peak = std::max(peak, static_cast<double>(std::abs(x)));
        }
        const double rms = std::sqrt(energy / s.samples.size());
        QVERIFY2(rms > 0.01, qPrintable(QString("rms %1").arg(rms)));
        QVERIFY(peak <= 1.05);
    }

    void singingStretchesVowels() {
        SpeechOptions o;
        o.voice = "en+f2";
        o.text = "<speak>oh <prosody rate=\"35%\">love</prosody></speak>";
        o.ssml = true;
        const Speech sung = synthesize_speech(o);
        o.text = "oh love";
        o.ssml = false;
        const Speech spoken = synthesize_speech(o);
        QVERIFY(sung.seconds() > spoken.seconds() * 1.2);
    }

    void resampleKeepsATone() {
        std::vector<float> tone(22050);
        for (size_t i = 0; i < tone.size(); ++i)
            tone[i] = 0.5f * static_cast<float>(std::sin(2 * M_PI * 1000.0 * i / 22050));
        const auto out = resample(tone, 22050, 16000);
        QCOMPARE(out.size(), size_t{16000});
        double peak = 0;
        int crossings = 0;
        for (size_t i = 1000; i < 15000; ++i) {
            peak = std::max(peak, static_cast<double>(std::abs(out[i])));
            crossings += (out[i - 1] < 0) != (out[i] < 0);
        }
        QVERIFY(std::abs(peak - 0.5) < 0.01);
        QVERIFY(std::abs(crossings - 2 * 1000 * 14000 / 16000.0) <= 2);
    }

    void visemesOpenOnVowelsAndCloseInPauses() {
        Speech s;
        s.samples.assign(16000, 0.0f);  // 1 s
        s.phonemes = {
            {"_", 0, 4000, 0}, {"a", 4000, 8000, 2}, {"m", 8000, 9600, 0}, {"_:", 9600, 16000, 0}};
        const auto v = viseme_track(s, 25, 25);
        QCOMPARE(v.size(), size_t{25});
        QVERIFY(v[2].jaw_open < 0.05);   // 0.1 s: pause
        QVERIFY(v[9].jaw_open > 0.6);    // 0.38 s: the middle of the "a"
        QVERIFY(v[22].jaw_open < 0.05);  // 0.9 s: pause
        QVERIFY(viseme_for("u:").lip_round > 0.8);
        QVERIFY(viseme_for("i:").lip_width > 0.8);
        QCOMPARE(viseme_for("m").jaw_open, 0.0);
    }

    void mouthColourIsOnlyTheMouthInterior() {
        for (std::uint64_t seed = 0; seed < 40; ++seed) {
            FaceRenderer r(random_face_style(seed), 128);
            FaceState s;
            s.yaw = (seed % 5) * 3.0 - 6;
            s.roll = (seed % 3) * 2.0 - 2;
            s.blink = (seed % 4) / 3.0;
            s.lip_round = (seed % 2);
            const long closed = mouth_pixels(r.draw(s).rgb);
            QVERIFY2(closed == 0, qPrintable(QString("seed %1: %2 pixels").arg(seed).arg(closed)));
            s.jaw_open = 0.8;
            QVERIFY(mouth_pixels(r.draw(s).rgb) > 10);
        }
    }

    void keypointsFollowThePose() {
        FaceRenderer r(random_face_style(1), 256);
        const FaceState rest;
        FaceState turned, open;
        turned.yaw = 10;
        open.jaw_open = 1;
        const auto k0 = r.keypoints(rest), k1 = r.keypoints(turned), k2 = r.keypoints(open);
        QVERIFY(k1[30].x > k0[30].x + 3);   // nose tip toward image right
        QVERIFY(k2[8].y > k0[8].y + 10);    // chin down
        QVERIFY(k2[66].y - k2[62].y > 15);  // inner lips apart
        QVERIFY(std::abs(k0[62].y - k0[66].y) < 1e-3);
        QVERIFY(k0[36].x < k0[39].x && k0[39].x < k0[42].x && k0[42].x < k0[45].x);
        QVERIFY(k0[48].x < k0[54].x && k0[17].x < k0[26].x);
        const auto f = r.draw(rest);
        QCOMPARE(f.rgb.type(), CV_8UC3);
        QCOMPARE(f.rgb.cols, 256);
        for (int i = 0; i < 68; ++i)
            QCOMPARE(f.keypoints[i], k0[i]);
    }

    void blinkIntervalsAreTwoToTenSeconds() {
        MotionInputs in;
        in.fps = 25;
        in.frame_count = 25 * 180;
        in.energy.assign(in.frame_count, 0.5);
        const MotionTrack m = make_motion(11, in);
        const auto onsets = eval::blink_onsets(m.blink, in.fps);
        QVERIFY2(onsets.size() >= 18, qPrintable(QString::number(onsets.size())));
        QCOMPARE(onsets.size(), m.blink_onsets.size());
        for (size_t i = 1; i < onsets.size(); ++i) {
            const double gap = onsets[i] - onsets[i - 1];
            QVERIFY2(gap >= 2.0 && gap <= 10.0, qPrintable(QString::number(gap)));
        }
        // ~150 ms: closed (>= 0.5) for 2 frames at most at 25 fps, closing faster than opening.
        QVERIFY(blink_profile(0.03, 0.15) > 0.5);
        QVERIFY(blink_profile(0.06, 0.15) > 0.99);
        QVERIFY(blink_profile(0.16, 0.15) == 0.0);
        QVERIFY(blink_profile(0.12, 0.15) > 0.05);  // 60 ms to close, still opening 60 ms later
    }

    void headMovesMoreWhileSpeaking() {
        MotionInputs quiet, loud;
        quiet.frame_count = loud.frame_count = 25 * 60;
        quiet.energy.assign(quiet.frame_count, 0.0);
        loud.energy.assign(loud.frame_count, 0.8);
        auto spread = [](const MotionTrack& m) {
            double mean = 0, var = 0;
            for (const auto& p : m.pose)
                mean += p.yaw;
            mean /= m.pose.size();
            for (const auto& p : m.pose)
                var += (p.yaw - mean) * (p.yaw - mean);
            return var / m.pose.size();
        };
        double q = 0, l = 0;
        for (std::uint64_t seed = 0; seed < 5; ++seed) {
            q += spread(make_motion(seed, quiet));
            l += spread(make_motion(seed, loud));
        }
        QVERIFY2(l > 3 * q, qPrintable(QString("%1 vs %2").arg(l).arg(q)));
    }

    void blinksShowInTheEyePixels() {
        FaceRenderer r(random_face_style(2), 256);
        FaceState open, shut;
        shut.blink = 1;
        const auto a = r.draw(open), b = r.draw(shut);
        QVERIFY(eval::eye_white_fraction(a.rgb, a.keypoints) > 0.03);
        QVERIFY(eval::eye_white_fraction(b.rgb, b.keypoints) <
                0.3 * eval::eye_white_fraction(a.rgb, a.keypoints));
    }

    void sameSeedSameClipOtherSeedOther() {
        const Clip a = make_clip(3, small_clip(1.0)), b = make_clip(3, small_clip(1.0));
        const Clip c = make_clip(4, small_clip(1.0));
        QCOMPARE(a.frame_count(), 25);
        QVERIFY(truth_json(a) == truth_json(b));
        QVERIFY(wav_bytes(a.speech.samples, 16000) == wav_bytes(b.speech.samples, 16000));
        for (int i = 0; i < a.frame_count(); i += 6)
            QVERIFY(cv::norm(a.frames[i], b.frames[i], cv::NORM_INF) == 0);
        QVERIFY(truth_json(a) != truth_json(c));
        QVERIFY(cv::norm(a.frames[0], c.frames[0], cv::NORM_L1) > 0);
        QVERIFY(a.speech.samples != c.speech.samples);
    }

    void pixelMeasuresTrackTheTruth() {
        // 256 px: at 128 px the opening is only a few pixels tall and r drops to about 0.94-0.99.
        ClipOptions o = small_clip(3.2);
        o.size = 256;
        const Clip clip = make_clip(21, o);
        std::vector<double> jaw, pixels, still, blink;
        std::vector<Keypoints> keypoints;
        const double first = eval::mouth_opening(clip.frames[0]);
        for (int i = 0; i < clip.frame_count(); ++i) {
            jaw.push_back(clip.truth[i].state.jaw_open);
            pixels.push_back(eval::mouth_opening(clip.frames[i]));
            still.push_back(first);  // the "static" baseline: the first frame repeated
            blink.push_back(clip.truth[i].state.blink);
            keypoints.push_back(clip.truth[i].keypoints);
        }
        const double r = eval::pearson(pixels, jaw);
        qInfo() << "pixel mouth opening vs jaw: r =" << r;
        QVERIFY2(r >= 0.95, qPrintable(QString::number(r)));
        QCOMPARE(eval::pearson(still, jaw), 0.0);
        // The first blink starts within 3 s; pixels see as many blinks as the truth holds.
        const auto truth_blinks = eval::blink_onsets(blink, 25);
        QVERIFY(!truth_blinks.empty());
        QCOMPARE(eval::blink_onsets_from_pixels(clip.frames, keypoints, 25).size(),
                 truth_blinks.size());
        QCOMPARE(clip.windows.size(), size_t{80 / 12});
        QVERIFY(clip.windows[0].head >= 0 && clip.windows[0].expression >= 0);
    }

    void clipFilesAreWrittenAndRepeatable() {
        QTemporaryDir dir1, dir2;
        ClipOptions o = small_clip(0.6);
        o.write_png = true;
        o.write_mp4 = true;
        const auto s1 = generate_clip(5, o, dir1.path().toStdString());
        o.write_mp4 = false;
        const auto s2 = generate_clip(5, o, dir2.path().toStdString());
        QCOMPARE(s1.name, std::string("clip_0000005"));
        QCOMPARE(s1.frames, 15);
        for (const char* f :
             {"/audio.wav", "/truth.json", "/frames/000000.png", "/frames/000014.png"})
            QVERIFY2(read_bytes(s1.dir + f) == read_bytes(s2.dir + f), f);
        QVERIFY(!fs::exists(s1.dir + "/frames/000015.png"));
        const std::string wav = read_bytes(s1.dir + "/audio.wav");
        QCOMPARE(wav.size(), size_t{44 + 2 * 9600});
        QCOMPARE(wav.substr(0, 4), std::string("RIFF"));
        QCOMPARE(static_cast<unsigned char>(wav[24]) | (static_cast<unsigned char>(wav[25]) << 8),
                 16000);
        const QJsonObject truth = read_json(s1.dir + "/truth.json");
        QCOMPARE(truth["frame_count"].toInt(), 15);
        QCOMPARE(truth["frames"].toArray().size(), 15);
        QCOMPARE(truth["frames"].toArray()[0].toObject()["keypoints"].toArray().size(), 68);
        QCOMPARE(truth["windows"].toArray().size(), 1);
        QVERIFY(truth["speech"].toObject()["phonemes"].toArray().size() > 0);
        const cv::Mat png = cv::imread(s1.dir + "/frames/000000.png");
        QCOMPARE(png.cols, 128);
        const auto probe = loopy::render::probe_video(s1.dir + "/video.mp4");
        QCOMPARE(probe.frame_count, 15);
        QCOMPARE(probe.audio_codec, std::string("aac"));
    }

    void datasetSplitsBySeed() {
        QTemporaryDir dir;
        SynthOptions o;
        o.out = dir.path().toStdString();
        o.clips = 2;
        o.seed = 10;
        o.split = Split::HeldOut;
        o.clip = small_clip(0.4);
        std::int64_t last_done = 0, last_total = 0;
        const auto made =
            run_synth(o, [&](std::int64_t done, std::int64_t total, const std::string&) {
                QVERIFY(done > last_done);
                last_done = done;
                last_total = total;
            });
        QCOMPARE(last_done, last_total);
        QCOMPARE(made.size(), size_t{2});
        QCOMPARE(made[0].seed, kHeldOutFirstSeed + 10);
        const QJsonObject ds = read_json(o.out + "/dataset.json");
        QCOMPARE(ds["clips"].toArray().size(), 2);
        QCOMPARE(ds["clips"].toArray()[1].toObject()["split"].toString(), QString("heldout"));
        QVERIFY(fs::exists(o.out + "/clip_1000011/truth.json"));
        SynthOptions train = o;
        train.split = Split::Train;
        train.seed = kHeldOutFirstSeed - 1;
        QVERIFY(loopy::test::contains(loopy::test::error_of([&] { run_synth(train); }), "below"));
        train.clip.size = 200;
        QVERIFY(loopy::test::contains(loopy::test::error_of([&] { run_synth(train); }), "128"));
    }
};

QTEST_APPLESS_MAIN(SynthDataTest)
#include "test_synth_data.moc"
