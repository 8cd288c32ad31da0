// Data-parallel training (model/distributed.h): two processes (this executable started again as
// workers, Gloo over loopback, TCPStore rendezvous from torchrun's variables) must end with
// identical weights, equal to one process training on the combined batch, and only rank 0 may
// write the run's files.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <QProcess>
#include <QtTest>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include "core/checkpoint.h"
#include "model/distributed.h"
#include "model/training.h"
#include "pipeline/tiny_model.h"
#include "test_util.h"
#include "train/random_batch.h"

using namespace loopy;
using model::TrainStage;
namespace fs = std::filesystem;

namespace {

constexpr int kWorld = 2;
constexpr int64_t kBatchPerRank = 2;
constexpr int64_t kSteps = 3;
constexpr const char* kWorkerDir = "LOOPY_DIST_TEST_WORKER";  // set in workers: their output dir
constexpr const char* kWorkerStage = "LOOPY_DIST_TEST_STAGE";

// Adam divides each gradient by its running RMS, which hides the gradient's scale (a sum where
// a mean belongs would go unnoticed) and turns float32 rounding in near-zero gradients into
// visible steps. A large epsilon makes AdamW's update proportional to the gradient (SGD with
// momentum), and no clipping keeps that scale: the weights then show the gradients themselves.
model::TrainerOptions test_options(TrainStage stage) {
    model::TrainerOptions o;
    o.stage = stage;
    o.lr = 1e-2;
    o.adamw.eps = 1.0;
    o.max_grad_norm = 0;
    o.seed = 11;
    o.ema_decay = 0.9;
    return o;
}

// Step s trains on the global batch random_batch(seed 100 + s) of kWorld * kBatchPerRank items.
model::TrainingBatch global_batch(int64_t step) {
    return test::random_batch(test::micro_config(), kWorld * kBatchPerRank, 100 + step);
}

TensorMap parameters_of(torch::nn::Module& module) {
    TensorMap out;
    for (const auto& p : module.named_parameters())
        out[p.key()] = p.value().detach().clone();
    return out;
}

// Trains kSteps steps as rank `rank` of `group` (null: one process with the global batch); saves
// the run to `run_dir` and returns the final weights plus "loss" (the last step's).
TensorMap train(TrainStage stage, std::shared_ptr<model::ProcessGroup> group,
                const std::string& run_dir) {
    const int rank = group ? group->rank() : 0;
    auto options = test_options(stage);
    options.distributed = group;
    // Other start weights on rank 1: the trainer must hand it rank 0's.
    model::Trainer trainer(test::random_network(test::micro_config(), 1 + rank), options);
    double loss = 0;
    for (int64_t s = 0; s < kSteps; ++s) {
        auto batch = global_batch(s);
        if (group) batch = test::slice_batch(batch, rank * kBatchPerRank, kBatchPerRank);
        loss = trainer.step(batch).loss;
    }
    trainer.save(run_dir, kSteps * kWorld * kBatchPerRank);
    auto out = parameters_of(trainer.model());
    out["loss"] = torch::tensor({loss}, torch::kFloat64);
    return out;
}

// A worker process: rank and peers from the environment, as `loopy train` reads them.
int run_worker(const std::string& dir) {
    try {
        torch::set_num_threads(1);
        const auto stage = model::parse_train_stage(std::atoi(std::getenv(kWorkerStage)));
        auto options = model::distributed_options_from_environment();
        options.timeout = std::chrono::minutes(2);  // a failed peer ends the test sooner
        auto group = std::make_shared<model::ProcessGroup>(options);
        const auto run_dir = dir + "/run_rank" + std::to_string(group->rank());
        const auto weights = train(stage, group, run_dir);
        save_safetensors(dir + "/weights_rank" + std::to_string(group->rank()) + ".safetensors",
                         weights);
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "worker failed: " << e.what() << "\n";
        return 1;
    }
}

// A TCP port nobody listens on right now (the kernel's pick for port 0).
int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        throw std::runtime_error("no free port");
    ::close(fd);
    return ntohs(addr.sin_port);
}

model::DistributedOptions loopback(int rank, int port, int timeout_ms) {
    model::DistributedOptions o;
    o.rank = rank;
    o.world_size = kWorld;
    o.master_addr = "127.0.0.1";
    o.master_port = port;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    return o;
}

std::string temp_dir(const char* name) {
    const auto dir =
        fs::temp_directory_path() / ("loopy_dist_test_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir.string();
}

double max_abs(const torch::Tensor& t) {
    return t.abs().max().item<double>();
}

}  // namespace

class DistributedTest : public QObject {
    Q_OBJECT

  private Q_SLOTS:
    void initTestCase() { torch::set_num_threads(1); }

    void environmentLikeTorchrun() {
        qputenv("WORLD_SIZE", "4");
        qputenv("RANK", "3");
        qputenv("MASTER_ADDR", "10.0.0.7");
        qputenv("MASTER_PORT", "29511");
        const auto o = model::distributed_options_from_environment();
        QCOMPARE(o.rank, 3);
        QCOMPARE(o.world_size, 4);
        QCOMPARE(o.master_addr, std::string("10.0.0.7"));
        QCOMPARE(o.master_port, 29511);
        qputenv("RANK", "4");
        QVERIFY(
            test::contains(test::error_of(model::distributed_options_from_environment), "outside"));
        qunsetenv("MASTER_PORT");
        QVERIFY(test::contains(test::error_of(model::distributed_options_from_environment),
                               "MASTER_PORT"));
        for (const char* name : {"WORLD_SIZE", "RANK", "MASTER_ADDR"})
            qunsetenv(name);
        QVERIFY(!model::distributed_options_from_environment().distributed());
    }

    void ncclIsRefusedClearlyWithoutIt() {
        if (model::nccl_available()) QSKIP("this LibTorch has NCCL");
        auto o = loopback(0, free_port(), 1000);
        o.backend = "nccl";
        QVERIFY(test::contains(test::error_of([&] { model::ProcessGroup group(o); }), "no NCCL"));
    }

    // Rank 0 alone: the rendezvous gives up after the timeout with a message that says so.
    void missingPeerIsAnErrorNotAHang() {
        const auto error =
            test::error_of([] { model::ProcessGroup group(loopback(0, free_port(), 2000)); });
        qInfo("%s", error.c_str());
        QVERIFY(test::contains(error, "rendezvous failed for rank 0 of 2"));
    }

    void portInUseIsAClearError() {
        auto o = loopback(0, free_port(), 2000);
        o.world_size = 1;  // a group of one serves the port without waiting for anyone
        model::ProcessGroup first(o);
        const auto error = test::error_of([&] { model::ProcessGroup second(o); });
        qInfo("%s", error.c_str());
        QVERIFY(test::contains(error, "rendezvous failed for rank 0 of 1"));
    }

    void twoProcessesEqualOneWithTheCombinedBatch_data() {
        QTest::addColumn<int>("stage");
        QTest::newRow("stage 1") << 1;
        QTest::newRow("stage 2") << 2;
    }

    void twoProcessesEqualOneWithTheCombinedBatch() {
        QFETCH(int, stage);
        const auto dir = temp_dir(("stage" + std::to_string(stage)).c_str());
        run_workers(stage, dir);
        const auto rank0 = load_safetensors(dir + "/weights_rank0.safetensors");
        const auto rank1 = load_safetensors(dir + "/weights_rank1.safetensors");
        const auto single = train(model::parse_train_stage(stage), nullptr, dir + "/single");
        const auto start = parameters_of(*test::random_network(test::micro_config(), 1));

        // (a) The ranks agree bit for bit: the all-reduced gradients are identical everywhere.
        for (const auto& [name, value] : rank0)
            QVERIFY2(torch::equal(value, rank1.at(name)), name.c_str());
        // (b) One process with the combined batch: equal up to float32 summation order, measured
        // against how far training moved the weights.
        double worst = 0, moved = 0;
        std::string worst_name;
        for (const auto& [name, value] : start) {
            const double diff = max_abs(single.at(name) - rank0.at(name));
            moved = std::max(moved, max_abs(single.at(name) - value));
            if (diff > worst) worst = diff, worst_name = name;
        }
        const double loss_diff =
            std::abs(single.at("loss").item<double>() - rank0.at("loss").item<double>());
        qInfo(
            "stage %d: max |weight difference| vs one process %.3g (%s); largest weight change "
            "in training %.3g; loss %.8g vs %.8g",
            stage, worst, worst_name.c_str(), moved, single.at("loss").item<double>(),
            rank0.at("loss").item<double>());
        QVERIFY(moved > 0);
        // Measured: 3e-8 (one float32 step of a weight near 0.3) against changes of 1e-3 to 4e-3;
        // a wrong reduction, slice or start would be off by the size of the changes themselves.
        QVERIFY2(worst <= 1e-3 * moved, worst_name.c_str());
        QVERIFY(loss_diff <= 1e-5 * std::abs(single.at("loss").item<double>()));
        // (c) Only rank 0 wrote the run.
        QVERIFY(fs::exists(fs::path(dir) / "run_rank0" / model::kTrainModelFile));
        QVERIFY(fs::exists(fs::path(dir) / "run_rank0" / model::kTrainStateFile));
        QVERIFY(!fs::exists(fs::path(dir) / "run_rank1"));
        fs::remove_all(dir);
    }

  private:
    // This executable twice, as ranks 0 and 1 on a free loopback port.
    void run_workers(int stage, const std::string& dir) {
        const int port = free_port();
        std::vector<std::unique_ptr<QProcess>> workers;
        for (int rank = 0; rank < kWorld; ++rank) {
            auto env = QProcessEnvironment::systemEnvironment();
            env.insert("RANK", QString::number(rank));
            env.insert("WORLD_SIZE", QString::number(kWorld));
            env.insert("MASTER_ADDR", "127.0.0.1");
            env.insert("MASTER_PORT", QString::number(port));
            env.insert(kWorkerDir, QString::fromStdString(dir));
            env.insert(kWorkerStage, QString::number(stage));
            auto worker = std::make_unique<QProcess>();
            worker->setProcessEnvironment(env);
            worker->setProcessChannelMode(QProcess::MergedChannels);
            worker->start(QCoreApplication::applicationFilePath(), {});
            QVERIFY(worker->waitForStarted());
            workers.push_back(std::move(worker));
        }
        for (auto& worker : workers) {
            // A hang guard only: the workers give up on a silent peer after 2 minutes.
            QVERIFY(worker->waitForFinished(8 * 60 * 1000));
            const auto output = worker->readAll().toStdString();
            QVERIFY2(worker->exitStatus() == QProcess::NormalExit && worker->exitCode() == 0,
                     output.c_str());
        }
    }
};

int main(int argc, char** argv) {
    if (const char* dir = std::getenv(kWorkerDir)) return run_worker(dir);
    QCoreApplication app(argc, argv);
    DistributedTest test;
    QTEST_SET_MAIN_SOURCE_PATH
    return QTest::qExec(&test, argc, argv);
}

#include "test_distributed.moc"
