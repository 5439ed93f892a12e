// trt_runner: run a serialized TensorRT engine the way a deployment does and print trtexec-style statistics.
//
//   trt_runner --engine swin_t_fp16.engine --plugin libswin_window_attention_plugin.so [--batch 8]
//              [--iterations 200] [--warmup 20] [--cuda-graph] [--allow-host-code] [--export-profile layers.json]
//
// Inputs and outputs live in pinned host buffers and device buffers; every iteration copies the inputs in,
// enqueues the engine (enqueueV3) and copies the outputs back on one stream. CUDA events around each phase give
// "Latency" (H2D + compute + D2H) and "GPU Compute Time" per iteration without a host sync inside the loop.
// --cuda-graph captures the enqueue once and replays it. --export-profile attaches an IProfiler afterwards and
// writes the average time per layer (trtexec's --exportProfile format), so the plugin's share is visible.
// Builds against TensorRT 10.x/11.x (C++17, links libnvinfer and the CUDA runtime).

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace
{

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TRT] " << message << "\n";
        }
    }
};

struct Options
{
    std::string engine;
    std::vector<std::string> plugins;
    int64_t batch = 1;
    int warmup = 20;
    int iterations = 200;
    int profileIterations = 50;
    bool cudaGraph = false;
    bool allowHostCode = false; // engines with the plugin library embedded (plugins_to_serialize)
    std::string profilePath;
};

[[noreturn]] void usage(char const* problem)
{
    std::cerr
        << "error: " << problem << "\n"
        << "usage: trt_runner --engine PATH [--plugin LIB]... [--batch N] [--iterations N] [--warmup N]\n"
        << "                  [--cuda-graph] [--allow-host-code] [--export-profile PATH] [--profile-iterations N]\n";
    std::exit(2);
}

int positiveInt(std::string const& flag, char const* text)
{
    char* end = nullptr;
    long const value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 1 || value > 1000000)
    {
        usage((flag + " needs a positive integer, got '" + text + "'").c_str());
    }
    return static_cast<int>(value);
}

Options parseOptions(int argc, char** argv)
{
    Options options;
    for (int i = 1; i < argc; ++i)
    {
        std::string const flag = argv[i];
        auto value = [&]() -> char const* {
            if (i + 1 >= argc)
            {
                usage((flag + " needs a value").c_str());
            }
            return argv[++i];
        };
        if (flag == "--engine")
        {
            options.engine = value();
        }
        else if (flag == "--plugin")
        {
            options.plugins.emplace_back(value());
        }
        else if (flag == "--batch")
        {
            options.batch = positiveInt(flag, value());
        }
        else if (flag == "--iterations")
        {
            options.iterations = positiveInt(flag, value());
        }
        else if (flag == "--warmup")
        {
            options.warmup = positiveInt(flag, value());
        }
        else if (flag == "--profile-iterations")
        {
            options.profileIterations = positiveInt(flag, value());
        }
        else if (flag == "--export-profile")
        {
            options.profilePath = value();
        }
        else if (flag == "--cuda-graph")
        {
            options.cudaGraph = true;
        }
        else if (flag == "--allow-host-code")
        {
            options.allowHostCode = true;
        }
        else
        {
            usage(("unknown option " + flag).c_str());
        }
    }
    if (options.engine.empty())
    {
        usage("--engine is required");
    }
    return options;
}

size_t elementSize(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16: return 2;
    case nvinfer1::DataType::kINT8:
    case nvinfer1::DataType::kUINT8:
    case nvinfer1::DataType::kBOOL:
    case nvinfer1::DataType::kFP8: return 1;
    default: throw std::runtime_error("unsupported I/O tensor type " + std::to_string(static_cast<int>(type)));
    }
}

int64_t volume(nvinfer1::Dims const& dims)
{
    int64_t count = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] < 0)
        {
            throw std::runtime_error("a tensor shape is still dynamic after setting the batch");
        }
        count *= dims.d[i];
    }
    return count;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// Linear interpolation between closest ranks: the same definition as benchmarks/stats.py.
double percentile(std::vector<double> const& sorted, double q)
{
    double const position = (static_cast<double>(sorted.size()) - 1.0) * q / 100.0;
    auto const lower = static_cast<size_t>(std::floor(position));
    size_t const upper = std::min(lower + 1, sorted.size() - 1);
    return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - static_cast<double>(lower));
}

void printStatistics(char const* what, std::vector<double> values)
{
    std::sort(values.begin(), values.end());
    double const mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
    std::printf(
        "[I] %s: min = %.5f ms, max = %.5f ms, mean = %.5f ms, median = %.5f ms, percentile(90%%) = %.5f ms, "
        "percentile(95%%) = %.5f ms, percentile(99%%) = %.5f ms\n",
        what, values.front(), values.back(), mean, percentile(values, 50), percentile(values, 90),
        percentile(values, 95), percentile(values, 99));
}

// Accumulates per-layer times over the profiled iterations, in execution order.
class LayerProfiler : public nvinfer1::IProfiler
{
public:
    void reportLayerTime(char const* layerName, float ms) noexcept override
    {
        auto [entry, inserted] = totals_.emplace(layerName, Total{});
        if (inserted)
        {
            order_.emplace_back(layerName);
        }
        entry->second.ms += ms;
        entry->second.count += 1;
    }

    void write(std::string const& path) const
    {
        double total = 0;
        for (auto const& [name, t] : totals_)
        {
            total += t.ms / t.count;
        }
        std::ofstream out(path);
        out << "[\n  { \"count\" : " << (totals_.empty() ? 0 : totals_.begin()->second.count) << " }";
        for (auto const& name : order_)
        {
            Total const& t = totals_.at(name);
            double const average = t.ms / t.count;
            out << ",\n  { \"name\" : \"" << escape(name) << "\", \"timeMs\" : " << t.ms
                << ", \"averageMs\" : " << average
                << ", \"percentage\" : " << (total > 0 ? 100.0 * average / total : 0.0) << " }";
        }
        out << "\n]\n";
        if (!out)
        {
            throw std::runtime_error("cannot write " + path);
        }
    }

private:
    struct Total
    {
        double ms = 0;
        int count = 0;
    };

    static std::string escape(std::string const& text)
    {
        std::string escaped;
        for (char c : text)
        {
            if (c == '"' || c == '\\')
            {
                escaped += '\\';
            }
            escaped += c;
        }
        return escaped;
    }

    std::map<std::string, Total> totals_;
    std::vector<std::string> order_;
};

struct Tensor
{
    std::string name;
    bool input = false;
    size_t bytes = 0;
    void* device = nullptr;
    void* host = nullptr; // pinned, so the copies are asynchronous DMA
};

class Runner
{
public:
    explicit Runner(Options options)
        : options_(std::move(options))
    {
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_)
        {
            throw std::runtime_error("createInferRuntime failed");
        }
        for (auto const& plugin : options_.plugins)
        {
            if (runtime_->getPluginRegistry().loadLibrary(plugin.c_str()) == nullptr)
            {
                throw std::runtime_error("TensorRT could not load the plugin library " + plugin);
            }
        }
        runtime_->setEngineHostCodeAllowed(options_.allowHostCode);
        std::vector<char> const blob = readFile(options_.engine);
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_)
        {
            throw std::runtime_error("cannot deserialize " + options_.engine + " (built for another TensorRT "
                                           "version or GPU? missing --plugin or --allow-host-code?)");
        }
        context_.reset(engine_->createExecutionContext());
        if (!context_)
        {
            throw std::runtime_error("createExecutionContext failed");
        }
        checkCuda(cudaStreamCreate(&stream_), "cudaStreamCreate");
        allocate();
    }

    Runner(Runner const&) = delete;
    Runner& operator=(Runner const&) = delete;

    ~Runner()
    {
        if (graphExec_ != nullptr)
        {
            cudaGraphExecDestroy(graphExec_);
        }
        for (auto& tensor : tensors_)
        {
            cudaFree(tensor.device);
            cudaFreeHost(tensor.host);
        }
        if (stream_ != nullptr)
        {
            cudaStreamDestroy(stream_);
        }
    }

    void benchmark()
    {
        for (int i = 0; i < options_.warmup; ++i)
        {
            iteration();
        }
        checkCuda(cudaStreamSynchronize(stream_), "warm-up");
        if (options_.cudaGraph)
        {
            captureGraph();
        }

        int const n = options_.iterations;
        std::vector<cudaEvent_t> events(4 * static_cast<size_t>(n));
        for (auto& event : events)
        {
            checkCuda(cudaEventCreate(&event), "cudaEventCreate");
        }
        for (int i = 0; i < n; ++i)
        {
            iteration(&events[4 * static_cast<size_t>(i)]);
        }
        checkCuda(cudaStreamSynchronize(stream_), "timed iterations");

        std::vector<double> latency, compute;
        for (int i = 0; i < n; ++i)
        {
            cudaEvent_t const* e = &events[4 * static_cast<size_t>(i)];
            float total = 0, gpu = 0;
            checkCuda(cudaEventElapsedTime(&total, e[0], e[3]), "cudaEventElapsedTime");
            checkCuda(cudaEventElapsedTime(&gpu, e[1], e[2]), "cudaEventElapsedTime");
            latency.push_back(total);
            compute.push_back(gpu);
        }
        float span = 0;
        checkCuda(cudaEventElapsedTime(&span, events.front(), events.back()), "cudaEventElapsedTime");
        for (auto& event : events)
        {
            cudaEventDestroy(event);
        }

        std::printf("[I] Engine: %s, batch %lld, %d iterations after %d warm-up%s\n", options_.engine.c_str(),
            static_cast<long long>(options_.batch), n, options_.warmup, options_.cudaGraph ? ", CUDA graph" : "");
        double const qps = n / (span / 1e3);
        std::printf("[I] Throughput: %.3f qps (%.1f img/s)\n", qps, qps * static_cast<double>(options_.batch));
        printStatistics("Latency", latency);
        printStatistics("GPU Compute Time", compute);
    }

    void profile(std::string const& path)
    {
        LayerProfiler profiler;
        context_->setProfiler(&profiler);
        context_->setEnqueueEmitsProfile(false); // report explicitly after each sync
        for (int i = 0; i < options_.profileIterations; ++i)
        {
            if (!context_->enqueueV3(stream_))
            {
                throw std::runtime_error("enqueueV3 failed while profiling");
            }
            checkCuda(cudaStreamSynchronize(stream_), "profiling");
            if (!context_->reportToProfiler())
            {
                throw std::runtime_error("reportToProfiler failed");
            }
        }
        context_->setProfiler(nullptr);
        profiler.write(path);
        std::printf("[I] Per-layer profile (%d iterations) written to %s\n", options_.profileIterations, path.c_str());
    }

private:
    void allocate()
    {
        std::mt19937 generator(0);
        std::normal_distribution<float> normal;
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i)
        {
            char const* name = engine_->getIOTensorName(i);
            if (engine_->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT)
            {
                continue;
            }
            nvinfer1::Dims dims = engine_->getTensorShape(name);
            if (dims.nbDims > 0 && dims.d[0] < 0)
            {
                dims.d[0] = options_.batch;
            }
            if (!context_->setInputShape(name, dims))
            {
                throw std::runtime_error(std::string("batch ") + std::to_string(options_.batch) + " is outside the engine's "
                                 "optimization profile for input " + name);
            }
        }
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i)
        {
            Tensor tensor;
            tensor.name = engine_->getIOTensorName(i);
            tensor.input = engine_->getTensorIOMode(tensor.name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
            nvinfer1::DataType const type = engine_->getTensorDataType(tensor.name.c_str());
            auto const count = volume(context_->getTensorShape(tensor.name.c_str()));
            tensor.bytes = static_cast<size_t>(count) * elementSize(type);
            checkCuda(cudaMalloc(&tensor.device, std::max<size_t>(tensor.bytes, 1)), "cudaMalloc");
            checkCuda(cudaMallocHost(&tensor.host, std::max<size_t>(tensor.bytes, 1)), "cudaMallocHost");
            std::memset(tensor.host, 0, tensor.bytes);
            if (tensor.input && type == nvinfer1::DataType::kFLOAT)
            {
                auto* values = static_cast<float*>(tensor.host);
                for (int64_t j = 0; j < count; ++j)
                {
                    values[j] = normal(generator);
                }
            }
            if (!context_->setTensorAddress(tensor.name.c_str(), tensor.device))
            {
                throw std::runtime_error("setTensorAddress failed for " + tensor.name);
            }
            tensors_.push_back(tensor);
        }
    }

    void captureGraph()
    {
        cudaGraph_t graph = nullptr;
        checkCuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        bool const enqueued = context_->enqueueV3(stream_);
        checkCuda(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
        if (!enqueued)
        {
            throw std::runtime_error("enqueueV3 failed during CUDA graph capture");
        }
        checkCuda(cudaGraphInstantiate(&graphExec_, graph, 0), "cudaGraphInstantiate");
        checkCuda(cudaGraphDestroy(graph), "cudaGraphDestroy");
    }

    // One inference; events (4, optional) mark start, inputs copied, compute done, outputs copied.
    void iteration(cudaEvent_t const* events = nullptr)
    {
        auto mark = [&](int k) {
            if (events != nullptr)
            {
                checkCuda(cudaEventRecord(events[k], stream_), "cudaEventRecord");
            }
        };
        mark(0);
        for (auto const& t : tensors_)
        {
            if (t.input)
            {
                checkCuda(cudaMemcpyAsync(t.device, t.host, t.bytes, cudaMemcpyHostToDevice, stream_), "H2D");
            }
        }
        mark(1);
        if (graphExec_ != nullptr)
        {
            checkCuda(cudaGraphLaunch(graphExec_, stream_), "cudaGraphLaunch");
        }
        else if (!context_->enqueueV3(stream_))
        {
            throw std::runtime_error("enqueueV3 failed");
        }
        mark(2);
        for (auto const& t : tensors_)
        {
            if (!t.input)
            {
                checkCuda(cudaMemcpyAsync(t.host, t.device, t.bytes, cudaMemcpyDeviceToHost, stream_), "D2H");
            }
        }
        mark(3);
    }

    Options options_;
    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    std::vector<Tensor> tensors_;
    cudaStream_t stream_ = nullptr;
    cudaGraphExec_t graphExec_ = nullptr;
};

} // namespace

int main(int argc, char** argv)
{
    Options const options = parseOptions(argc, argv);
    try
    {
        Runner runner(options);
        runner.benchmark();
        if (!options.profilePath.empty())
        {
            runner.profile(options.profilePath);
        }
    }
    catch (std::exception const& error)
    {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
    return 0;
}
