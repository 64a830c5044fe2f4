// moemesh-forward: asks a MoEMesh router which model it serves (DescribeModel), then runs one MoE layer (Forward)
// on random hidden states or on a file of them, and prints a summary. Exits 1 on a gRPC error, printing its status.
//
//   moemesh-forward --router 127.0.0.1:50051 [--layer 0] [--tokens 4] [--seed 1]
//                   [--input FILE] [--output FILE] [--token-file FILE] [--timeout-s 30]
//                   [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
//
// --input: raw little-endian float32 values, [T, H] row-major (T from the file's size); --output: the layer's
// output, written the same way.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "moemesh/v1/router.grpc.pb.h"

namespace {

struct Options {
  std::string router = "127.0.0.1:50051";
  std::string layer;
  std::string input;
  std::string output;
  std::string token_file;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  int64_t tokens = 4;
  uint64_t seed = 1;
  double timeout_s = 30;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "moemesh-forward: " << problem << "\n"
            << "usage: moemesh-forward --router HOST:PORT [--layer NAME] [--tokens T] [--seed S] [--input FILE]"
               " [--output FILE] [--token-file FILE] [--timeout-s SECONDS]"
               " [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  std::map<std::string, std::string*> strings = {{"--router", &options.router}, {"--layer", &options.layer},
                                                 {"--input", &options.input},   {"--output", &options.output},
                                                 {"--token-file", &options.token_file},
                                                 {"--tls-ca", &options.tls_ca},
                                                 {"--tls-cert", &options.tls_cert},
                                                 {"--tls-key", &options.tls_key}};
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name == "--help" || name == "-h") usage("one Forward call against a router");
    if (i + 1 >= argc) usage(name + ": expected a value, got nothing");
    std::string value = argv[++i];
    try {
      if (auto found = strings.find(name); found != strings.end()) {
        *found->second = value;
      } else if (name == "--tokens") {
        options.tokens = std::stoll(value);
        if (options.tokens < 1) usage("--tokens: expected 1 or more, got " + value);
      } else if (name == "--seed") {
        options.seed = std::stoull(value);
      } else if (name == "--timeout-s") {
        options.timeout_s = std::stod(value);
      } else {
        usage("unknown option " + name);
      }
    } catch (const std::logic_error&) {
      usage(name + ": expected a number, got '" + value + "'");
    }
  }
  return options;
}

// Uniform values in [-1, 1) from a 64-bit LCG: the same inputs for the same seed on every machine.
std::vector<float> random_values(size_t count, uint64_t seed) {
  std::vector<float> values(count);
  uint64_t state = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& value : values) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    value = static_cast<float>(static_cast<double>(state >> 40) / static_cast<double>(1ULL << 24) * 2.0 - 1.0);
  }
  return values;
}

int fail(const std::string& call, const grpc::Status& status) {
  static const std::map<int, std::string> names = {
      {1, "CANCELLED"},          {2, "UNKNOWN"},           {3, "INVALID_ARGUMENT"}, {4, "DEADLINE_EXCEEDED"},
      {5, "NOT_FOUND"},          {6, "ALREADY_EXISTS"},    {7, "PERMISSION_DENIED"}, {8, "RESOURCE_EXHAUSTED"},
      {9, "FAILED_PRECONDITION"}, {10, "ABORTED"},         {11, "OUT_OF_RANGE"},     {12, "UNIMPLEMENTED"},
      {13, "INTERNAL"},          {14, "UNAVAILABLE"},      {15, "DATA_LOSS"},        {16, "UNAUTHENTICATED"}};
  auto name = names.find(status.error_code());
  std::cerr << "moemesh-forward: " << call << " failed: "
            << (name == names.end() ? std::to_string(status.error_code()) : name->second) << ": "
            << status.error_message() << "\n";
  return 1;
}

std::string read_file(const std::string& option, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) usage(option + ": cannot read " + path);
  return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

// The token in a --token-file: its first line, without surrounding blanks.
std::string read_token(const std::string& path) {
  std::string text = read_file("--token-file", path);
  std::string line = text.substr(0, text.find('\n'));
  const char* blanks = " \t\r";
  auto begin = line.find_first_not_of(blanks);
  if (begin == std::string::npos) usage("--token-file: expected a token, got an empty line");
  return line.substr(begin, line.find_last_not_of(blanks) - begin + 1);
}

std::shared_ptr<grpc::ChannelCredentials> credentials(const Options& options) {
  if (options.tls_ca.empty()) {
    if (!options.tls_cert.empty() || !options.tls_key.empty()) usage("--tls-cert and --tls-key need --tls-ca");
    return grpc::InsecureChannelCredentials();
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) usage("--tls-cert and --tls-key go together");
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = read_file("--tls-ca", options.tls_ca);
  if (!options.tls_cert.empty()) {
    ssl.pem_cert_chain = read_file("--tls-cert", options.tls_cert);
    ssl.pem_private_key = read_file("--tls-key", options.tls_key);
  }
  return grpc::SslCredentials(ssl);
}

void prepare(grpc::ClientContext& context, const Options& options, const std::string& token) {
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000)));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse(argc, argv);
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(256 << 20);
  arguments.SetMaxSendMessageSize(256 << 20);
  const std::string token = options.token_file.empty() ? "" : read_token(options.token_file);
  auto channel = grpc::CreateCustomChannel(options.router, credentials(options), arguments);
  auto router = moemesh::v1::Router::NewStub(channel);

  moemesh::v1::DescribeModelResponse model;
  {
    grpc::ClientContext context;
    prepare(context, options, token);
    grpc::Status status = router->DescribeModel(&context, moemesh::v1::DescribeModelRequest(), &model);
    if (!status.ok()) return fail("DescribeModel", status);
  }
  const int64_t hidden = model.hidden_size();
  std::cout << "model " << model.model_type() << ", hidden size " << hidden << ", routing " << model.routing()
            << ", MoE layers:";
  for (const auto& layer : model.layers()) {
    std::cout << " " << layer.name() << " (" << layer.num_experts() << " experts, top-" << layer.top_k()
              << (layer.shared_expert() ? ", shared" : "") << ")";
  }
  std::cout << "\n";
  if (options.layer.empty()) {
    if (model.layers_size() == 0) usage("the router serves no MoE layer");
    options.layer = model.layers(0).name();
  }

  std::vector<float> values;
  if (!options.input.empty()) {
    std::ifstream file(options.input, std::ios::binary);
    if (!file) usage("--input: cannot read " + options.input);
    std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (bytes.empty() || bytes.size() % (4 * hidden) != 0) {
      usage("--input: expected a multiple of " + std::to_string(4 * hidden) + " bytes (rows of " +
            std::to_string(hidden) + " float32), got " + std::to_string(bytes.size()));
    }
    values.resize(bytes.size() / 4);
    std::memcpy(values.data(), bytes.data(), bytes.size());
    options.tokens = static_cast<int64_t>(values.size()) / hidden;
  } else {
    values = random_values(static_cast<size_t>(options.tokens * hidden), options.seed);
  }

  moemesh::v1::ForwardRequest request;
  request.set_layer(options.layer);
  request.set_return_routing(true);
  auto* tensor = request.mutable_hidden_states();
  tensor->set_dtype(moemesh::v1::DTYPE_F32);
  tensor->add_shape(options.tokens);
  tensor->add_shape(hidden);
  tensor->set_data(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));

  moemesh::v1::ForwardResponse reply;
  grpc::ClientContext context;
  prepare(context, options, token);
  grpc::Status status = router->Forward(&context, request, &reply);
  if (!status.ok()) return fail("Forward", status);

  const auto& data = reply.output().data();
  if (reply.output().dtype() != moemesh::v1::DTYPE_F32 || data.size() != values.size() * sizeof(float)) {
    std::cerr << "moemesh-forward: Forward: expected " << values.size() << " float32 values, got "
              << data.size() << " bytes of dtype " << reply.output().dtype() << "\n";
    return 1;
  }
  std::vector<float> output(values.size());
  std::memcpy(output.data(), data.data(), data.size());
  double norm = 0;
  for (float value : output) norm += static_cast<double>(value) * value;
  std::cout << "layer " << options.layer << ": " << options.tokens << " tokens, output [" << options.tokens << ", "
            << hidden << "], |y| = " << std::sqrt(norm);
  const int k = reply.routing().top_k();
  if (k > 0) {
    std::cout << ", experts of token 0:";
    for (int slot = 0; slot < k; ++slot) {
      std::cout << " " << reply.routing().topk_ids(slot) << " (" << reply.routing().topk_weights(slot) << ")";
    }
  }
  std::cout << "\n";
  if (!options.output.empty()) {
    std::ofstream file(options.output, std::ios::binary);
    file.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!file) {
      std::cerr << "moemesh-forward: --output: cannot write " << options.output << "\n";
      return 1;
    }
  }
  return 0;
}
