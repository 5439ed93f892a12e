// Drives a plugin library's creator the way TensorRT does, without TensorRT: tests/test_node_contract.py runs it to
// prove that createPlugin parses the fields by name and that the plugin serializes the contract's attributes.
//
//   swin_window_attention_creator_probe <plugin library> --list
//   swin_window_attention_creator_probe <plugin library> [--version <v>] [<name>:<int32|int64|float32|float64>:<value>
//   ...]
//
// dlopens the library and calls getCreators and setLoggerFinder. --list prints "creator <name> <version> <namespace>"
// for every creator getCreators returns, in its order. Otherwise it takes the creator of plugin version <v> (default:
// the first) and calls createPlugin(kBUILD) with the fields given, in their order. Prints one line per fact
// ("creator <name> <version> <namespace>", "declared <field> <type> <length>", "created 0|1",
// "serialized <field> <type> <length> <value>", "error <message>" for each error the plugin logs).
// Exits 0 when it could ask (whether or not the plugin was created), 2 on a usage or loading problem.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

class PrintingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* message) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            std::printf("error %s\n", message);
        }
    }
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &mLogger;
    }

private:
    PrintingLogger mLogger;
};

//! One field of the command line, with the storage its data points into.
struct Argument
{
    std::string name;
    PluginFieldType type;
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
};

bool parseArgument(std::string const& text, Argument& argument)
{
    size_t const first = text.find(':');
    size_t const second = first == std::string::npos ? first : text.find(':', first + 1);
    if (second == std::string::npos)
    {
        return false;
    }
    argument.name = text.substr(0, first);
    std::string const type = text.substr(first + 1, second - first - 1);
    std::string const value = text.substr(second + 1);
    argument.i32 = static_cast<int32_t>(std::stol(value));
    argument.i64 = std::stoll(value);
    argument.f32 = std::stof(value);
    argument.f64 = std::stod(value);
    PluginFieldType const types[]
        = {PluginFieldType::kINT32, PluginFieldType::kINT64, PluginFieldType::kFLOAT32, PluginFieldType::kFLOAT64};
    char const* names[] = {"int32", "int64", "float32", "float64"};
    for (int32_t i = 0; i < 4; ++i)
    {
        if (type == names[i])
        {
            argument.type = types[i];
            return true;
        }
    }
    return false;
}

void const* argumentData(Argument const& argument)
{
    switch (argument.type)
    {
    case PluginFieldType::kINT64: return &argument.i64;
    case PluginFieldType::kFLOAT32: return &argument.f32;
    case PluginFieldType::kFLOAT64: return &argument.f64;
    default: return &argument.i32;
    }
}

//! A serialized field's first value as text (the plugin serializes int32 and float32 scalars).
std::string fieldValue(PluginField const& field)
{
    if (field.data == nullptr)
    {
        return "null";
    }
    char text[64];
    if (field.type == PluginFieldType::kFLOAT32)
    {
        std::snprintf(text, sizeof(text), "%.9g", *static_cast<float const*>(field.data));
    }
    else
    {
        std::snprintf(text, sizeof(text), "%d", *static_cast<int32_t const*>(field.data));
    }
    return text;
}

void printFields(char const* what, PluginFieldCollection const* fields, bool withValues)
{
    for (int32_t i = 0; fields != nullptr && i < fields->nbFields; ++i)
    {
        PluginField const& field = fields->fields[i];
        std::printf("%s %s %d %d%s%s\n", what, field.name, static_cast<int32_t>(field.type), field.length,
            withValues ? " " : "", withValues ? fieldValue(field).c_str() : "");
    }
}

void printCreator(IPluginCreatorV3One const& creator)
{
    std::printf(
        "creator %s %s \"%s\"\n", creator.getPluginName(), creator.getPluginVersion(), creator.getPluginNamespace());
}

//! The creator of plugin version `version` (nullptr: the first), or nullptr when there is none.
IPluginCreatorV3One* findCreator(IPluginCreatorInterface* const* creators, int32_t nbCreators, char const* version)
{
    for (int32_t i = 0; i < nbCreators; ++i)
    {
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (version == nullptr || std::strcmp(creator->getPluginVersion(), version) == 0)
        {
            return creator;
        }
    }
    return nullptr;
}

//! Creates a plugin with the fields of argv[first..argc) and prints what it declares and serializes.
int createWith(IPluginCreatorV3One& creator, int argc, char** argv, int first)
{
    printCreator(creator);
    printFields("declared", creator.getFieldNames(), false);
    std::deque<Argument> arguments; // a deque keeps each element where the fields point
    std::vector<PluginField> fields;
    for (int32_t i = first; i < argc; ++i)
    {
        arguments.emplace_back();
        if (!parseArgument(argv[i], arguments.back()))
        {
            std::fprintf(stderr, "bad field %s: want <name>:<int32|int64|float32|float64>:<value>\n", argv[i]);
            return 2;
        }
        fields.emplace_back(arguments.back().name.c_str(), argumentData(arguments.back()), arguments.back().type, 1);
    }
    PluginFieldCollection collection{static_cast<int32_t>(fields.size()), fields.data()};
    IPluginV3* plugin = creator.createPlugin("probe", &collection, TensorRTPhase::kBUILD);
    std::printf("created %d\n", plugin != nullptr ? 1 : 0);
    if (plugin != nullptr)
    {
        auto* runtime
            = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        printFields("serialized", runtime->getFieldsToSerialize(), true);
        delete plugin;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2)
    {
        std::fprintf(stderr, "usage: %s <plugin library> [<name>:<type>:<value> ...]\n", argv[0]);
        return 2;
    }
    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(library != nullptr ? dlsym(library, "getCreators") : nullptr);
    auto setLoggerFinder
        = reinterpret_cast<SetLoggerFinder>(library != nullptr ? dlsym(library, "setLoggerFinder") : nullptr);
    if (getCreators == nullptr || setLoggerFinder == nullptr)
    {
        std::fprintf(stderr, "cannot load getCreators/setLoggerFinder from %s: %s\n", argv[1], dlerror());
        return 2;
    }
    static Finder finder;
    setLoggerFinder(&finder);
    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    bool const list = argc > 2 && std::strcmp(argv[2], "--list") == 0;
    bool const pick = argc > 3 && std::strcmp(argv[2], "--version") == 0;
    if (list)
    {
        for (int32_t i = 0; i < nbCreators; ++i)
        {
            printCreator(*static_cast<IPluginCreatorV3One*>(creators[i]));
        }
        return 0;
    }
    IPluginCreatorV3One* creator = findCreator(creators, nbCreators, pick ? argv[3] : nullptr);
    if (creator == nullptr)
    {
        std::fprintf(
            stderr, "%s has no creator of version %s (%d creators)\n", argv[1], pick ? argv[3] : "any", nbCreators);
        return 2;
    }
    return createWith(*creator, argc, argv, pick ? 4 : 2);
}
