#include "serve/http_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "serve/chat_page.h"
#include "serve/engine.h"

namespace memoe {

using nlohmann::json;

namespace {

// What a handler reads of a request once its fields are checked.
struct Parsed {
  std::vector<int64_t> prompt;
  EngineRequest request;
  bool stream = false;
};

// A request field that is wrong: 400 with its name.
struct BadRequest {
  std::string message, param;
};

json error_body(const std::string& message, const std::string& type, const std::string& param = "",
                const std::string& code = "") {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

// JSON text, any ill-formed UTF-8 (an echo of a client's bytes) replaced
// rather than thrown on.
std::string to_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(to_text(body), "application/json");
}

// Between the engine thread (producer) and the HTTP thread (consumer).
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> pieces;
  bool done = false;
  std::atomic<bool> gone{false};  // the client disconnected
  std::string finish, error;
  int64_t completion_tokens = 0;
};

int64_t as_int(const json& j, const char* name, int64_t lo, int64_t hi) {
  if (!j.is_number_integer()) throw BadRequest{std::string(name) + " must be an integer", name};
  const int64_t v = j.get<int64_t>();
  if (v < lo || v > hi)
    throw BadRequest{std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                         "], got " + std::to_string(v),
                     name};
  return v;
}

double as_number(const json& j, const char* name, double lo, double hi) {
  if (!j.is_number()) throw BadRequest{std::string(name) + " must be a number", name};
  const double v = j.get<double>();
  if (!(v >= lo && v <= hi))
    throw BadRequest{std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", name};
  return v;
}

class Server {
 public:
  Server(const Model& m, const Tokenizer& tok, const ServeOptions& o)
      : model_(m), tok_(tok), o_(o), engine_(m, tok, o.max_batch, o.max_queue, o.max_context) {}

  void run() {
    httplib::Server svr;
    svr.new_task_queue = [n = o_.http_threads] { return new httplib::ThreadPool(size_t(n)); };
    svr.set_payload_max_length(o_.max_body_bytes);
    svr.set_read_timeout(30, 0);
    svr.set_write_timeout(30, 0);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // The page and the health check stay open; the page sends the key with its API calls.
      if (o_.api_key.empty() || req.path == "/health" || req.path == "/") return httplib::Server::HandlerResponse::Unhandled;
      const std::string want = "Bearer " + o_.api_key;
      if (req.get_header_value("Authorization") == want) return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, 401, error_body("Incorrect API key provided", "invalid_request_error", "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline'");
      res.set_content(kChatPage, "text/html; charset=utf-8");
    });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      const json j = {{"object", "list"},
                      {"data", {{{"id", o_.model_name}, {"object", "model"}, {"created", started_}, {"owned_by", "memoe"}}}}};
      res.set_content(to_text(j), "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics(), "text/plain"); });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, false); });
    svr.Post("/v1/chat/completions",
             [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, true); });
    svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.status == 404)
        send_error(res, 404, error_body("Unknown path", "invalid_request_error"));
      else if (res.status == 413)
        send_error(res, 413, error_body("The request body is too large", "invalid_request_error"));
    });
    MEMOE_CHECK(svr.bind_to_port(o_.host, o_.port), "cannot listen on ", o_.host, ":", o_.port);
    std::fprintf(stderr, "listening on http://%s:%d (model %s, batch %d, queue %d, context %lld)\n", o_.host.c_str(),
                 o_.port, o_.model_name.c_str(), o_.max_batch, o_.max_queue, (long long)engine_.max_context());
    server_ = &svr;
    svr.listen_after_bind();
    server_ = nullptr;
  }
  void stop() {
    if (server_) server_->stop();
  }

 private:
  Parsed parse(const json& j, bool chat) {
    if (!j.is_object()) throw BadRequest{"the request body must be a JSON object", ""};
    static const std::set<std::string> common = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed",
                                                 "stop", "stream", "n", "user", "presence_penalty",
                                                 "frequency_penalty", "stream_options", "logprobs", "ignore_eos"};
    for (const auto& [k, v] : j.items())
      if (!common.count(k) && k != (chat ? "messages" : "prompt") && !(chat && k == "max_completion_tokens"))
        throw BadRequest{"Unrecognized request argument supplied: " + k, k};
    if (j.contains("model") && (!j["model"].is_string() || j["model"] != o_.model_name))
      throw BadRequest{"The model " + to_text(j["model"]) + " does not exist; this server serves \"" + o_.model_name +
                           "\"",
                       "model"};
    Parsed p;
    std::string prompt;
    if (chat) {
      if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty())
        throw BadRequest{"messages must be a non-empty array", "messages"};
      std::vector<std::pair<std::string, std::string>> messages;
      for (const json& m : j["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
            !m["content"].is_string())
          throw BadRequest{"each message must be an object with string role and content", "messages"};
        const std::string role = m["role"];
        if (role != "system" && role != "user" && role != "assistant")
          throw BadRequest{"message role must be system, user or assistant, not '" + role + "'", "messages"};
        messages.emplace_back(role, m["content"].get<std::string>());
      }
      prompt = chat_prompt(messages);
    } else {
      if (!j.contains("prompt")) throw BadRequest{"prompt is required", "prompt"};
      const json& pj = j["prompt"];
      if (pj.is_string())
        prompt = pj.get<std::string>();
      else if (pj.is_array() && pj.size() == 1 && pj[0].is_string())
        prompt = pj[0].get<std::string>();
      else
        throw BadRequest{"prompt must be a string (one prompt a request)", "prompt"};
    }
    if (prompt.size() > o_.max_body_bytes) throw BadRequest{"prompt is too long", "prompt"};
    try {
      p.prompt = prompt_ids(tok_, prompt);
    } catch (const Error& e) {
      throw BadRequest{std::string("prompt: ") + e.what(), chat ? "messages" : "prompt"};
    }
    EngineRequest& r = p.request;
    r.max_tokens = 16;
    const char* max_key = chat && j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (j.contains(max_key) && !j[max_key].is_null()) r.max_tokens = as_int(j[max_key], max_key, 0, o_.max_tokens);
    const int64_t context = engine_.max_context();
    if (int64_t(p.prompt.size()) + r.max_tokens > context)
      throw BadRequest{"This model's maximum context length is " + std::to_string(context) + " tokens. However, you "
                           "requested " + std::to_string(int64_t(p.prompt.size()) + r.max_tokens) + " tokens (" +
                           std::to_string(p.prompt.size()) + " in the prompt, " + std::to_string(r.max_tokens) +
                           " for the completion)",
                       max_key};
    double temperature = 1.0;
    if (j.contains("temperature") && !j["temperature"].is_null()) temperature = as_number(j["temperature"], "temperature", 0, 2);
    r.sampling.greedy = temperature == 0.0;
    r.sampling.temperature = float(r.sampling.greedy ? 1.0 : temperature);
    if (j.contains("top_p") && !j["top_p"].is_null()) {
      r.sampling.top_p = float(as_number(j["top_p"], "top_p", 0, 1));
      if (r.sampling.top_p <= 0) throw BadRequest{"top_p must be in (0, 1]", "top_p"};
    }
    if (j.contains("top_k") && !j["top_k"].is_null()) r.sampling.top_k = int(as_int(j["top_k"], "top_k", 0, 1 << 20));
    if (j.contains("seed") && !j["seed"].is_null())
      r.sampling.seed = uint64_t(as_int(j["seed"], "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
    else
      r.sampling.seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
    if (j.contains("n") && !j["n"].is_null() && as_int(j["n"], "n", 1, 1) != 1) throw BadRequest{"n must be 1", "n"};
    if (j.contains("stop") && !j["stop"].is_null()) {
      const json& s = j["stop"];
      if (s.is_string()) {
        r.stop.push_back(s);
      } else if (s.is_array() && s.size() <= 4) {
        for (const json& x : s) {
          if (!x.is_string()) throw BadRequest{"stop must be a string or up to 4 strings", "stop"};
          r.stop.push_back(x);
        }
      } else {
        throw BadRequest{"stop must be a string or up to 4 strings", "stop"};
      }
      for (const std::string& x : r.stop)
        if (x.empty()) throw BadRequest{"a stop string must not be empty", "stop"};
    }
    if (j.contains("ignore_eos") && !j["ignore_eos"].is_null()) {
      if (!j["ignore_eos"].is_boolean()) throw BadRequest{"ignore_eos must be a boolean", "ignore_eos"};
      r.ignore_eos = j["ignore_eos"];
    }
    if (j.contains("stream") && !j["stream"].is_null()) {
      if (!j["stream"].is_boolean()) throw BadRequest{"stream must be a boolean", "stream"};
      p.stream = j["stream"];
    }
    r.prompt = p.prompt;
    return p;
  }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    Parsed p;
    try {
      p = parse(json::parse(req.body), chat);
    } catch (const json::exception& e) {
      return send_error(res, 400, error_body(std::string("the request body is not valid JSON: ") + e.what(),
                                             "invalid_request_error"));
    } catch (const BadRequest& b) {
      return send_error(res, 400, error_body(b.message, "invalid_request_error", b.param));
    }
    auto channel = std::make_shared<Channel>();
    auto request = std::make_shared<EngineRequest>(std::move(p.request));
    request->on_text = [channel](const std::string& text) {
      std::lock_guard<std::mutex> lock(channel->mu);
      channel->pieces.push_back(text);
      channel->cv.notify_all();
      return !channel->gone.load();
    };
    request->on_done = [channel](const std::string& finish, int64_t tokens, const std::string& error) {
      std::lock_guard<std::mutex> lock(channel->mu);
      channel->finish = finish;
      channel->completion_tokens = tokens;
      channel->error = error;
      channel->done = true;
      channel->cv.notify_all();
    };
    if (!engine_.submit(request))
      return send_error(res, 429, error_body("The server is busy: its queue is full; retry later", "server_error", "",
                                             "rate_limit_exceeded"));
    const int64_t id = next_id_++;
    const std::string object = chat ? "chat.completion" : "text_completion";
    const std::string prefix = chat ? "chatcmpl-" : "cmpl-";
    const int64_t created = int64_t(std::time(nullptr));
    const int64_t prompt_tokens = int64_t(p.prompt.size());
    auto usage = [prompt_tokens](int64_t completion) {
      return json{{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion},
                  {"total_tokens", prompt_tokens + completion}};
    };
    const std::string model = o_.model_name;
    if (!p.stream) {
      std::string text;
      std::unique_lock<std::mutex> lock(channel->mu);
      channel->cv.wait(lock, [&] { return channel->done; });
      for (const std::string& s : channel->pieces) text += s;
      if (channel->finish == "error")
        return send_error(res, 500, error_body("generation failed: " + channel->error, "server_error"));
      json choice = {{"index", 0}, {"finish_reason", channel->finish}};
      if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", text}};
      else
        choice["text"] = text, choice["logprobs"] = nullptr;
      const json body = {{"id", prefix + std::to_string(id)}, {"object", object}, {"created", created},
                         {"model", model}, {"choices", json::array({choice})}, {"usage", usage(channel->completion_tokens)}};
      res.set_content(to_text(body), "application/json");
      return;
    }
    auto chunk = [=](const json& delta_or_text, const json& finish) {
      json choice = {{"index", 0}, {"finish_reason", finish}};
      if (chat)
        choice["delta"] = delta_or_text;
      else
        choice["text"] = delta_or_text, choice["logprobs"] = nullptr;
      return json{{"id", prefix + std::to_string(id)}, {"object", chat ? "chat.completion.chunk" : "text_completion"},
                  {"created", created}, {"model", model}, {"choices", json::array({choice})}};
    };
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [channel, chunk, chat, usage, first = true](size_t, httplib::DataSink& sink) mutable {
          auto send = [&](const json& j) {
            const std::string line = "data: " + to_text(j) + "\n\n";
            return sink.write(line.data(), line.size());
          };
          if (first && chat) {
            first = false;
            if (!send(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr))) return channel->gone = true, false;
          }
          std::unique_lock<std::mutex> lock(channel->mu);
          channel->cv.wait(lock, [&] { return channel->done || !channel->pieces.empty(); });
          while (!channel->pieces.empty()) {
            const std::string text = std::move(channel->pieces.front());
            channel->pieces.pop_front();
            lock.unlock();
            const bool ok = send(chunk(chat ? json{{"content", text}} : json(text), nullptr));
            lock.lock();
            if (!ok) return channel->gone = true, false;
          }
          if (!channel->done) return true;
          json last = chunk(chat ? json::object() : json(""), channel->finish == "error" ? "stop" : channel->finish);
          last["usage"] = usage(channel->completion_tokens);
          lock.unlock();
          if (!send(last)) return false;
          const std::string done = "data: [DONE]\n\n";
          sink.write(done.data(), done.size());
          sink.done();
          return true;
        },
        [channel](bool) { channel->gone = true; });
  }

  std::string metrics() const {
    const EngineStats s = engine_.stats();
    std::string out;
    auto line = [&](const char* name, const char* type, const char* help, double value) {
      char number[32];
      std::snprintf(number, sizeof number, "%.9g", value);
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + number +
             "\n";
    };
    line("memoe_requests_total", "counter", "Requests received by the engine", double(s.requests));
    line("memoe_requests_rejected_total", "counter", "Requests refused with 429 (queue full)", double(s.rejected));
    line("memoe_requests_completed_total", "counter", "Requests finished", double(s.completed));
    line("memoe_requests_cancelled_total", "counter", "Requests whose client went away", double(s.cancelled));
    line("memoe_prompt_tokens_total", "counter", "Prompt tokens prefilled", double(s.prompt_tokens));
    line("memoe_completion_tokens_total", "counter", "Tokens generated", double(s.completion_tokens));
    line("memoe_queue_depth", "gauge", "Requests waiting for a batch slot", double(s.queue_depth));
    line("memoe_batch_size", "gauge", "Sequences in the current decode step", double(s.batch_size));
    line("memoe_time_to_first_token_seconds_sum", "counter", "Sum of times to first token", s.ttft_sum_s);
    line("memoe_time_to_first_token_seconds_count", "counter", "Requests timed to first token", double(s.ttft_count));
    line("memoe_inter_token_latency_seconds_sum", "counter", "Sum of gaps between tokens", s.itl_sum_s);
    line("memoe_inter_token_latency_seconds_count", "counter", "Gaps between tokens timed", double(s.itl_count));
    return out;
  }

  const Model& model_;
  const Tokenizer& tok_;
  const ServeOptions o_;
  BatchEngine engine_;
  std::atomic<int64_t> next_id_{1};
  const int64_t started_ = int64_t(std::time(nullptr));
  httplib::Server* server_ = nullptr;
};

Server* running = nullptr;
extern "C" void stop_on_signal(int) {
  if (running) running->stop();
}

}  // namespace

std::string chat_prompt(const std::vector<std::pair<std::string, std::string>>& messages) {
  std::string out;
  for (const auto& [role, content] : messages) {
    const std::string name = role == "system" ? "System" : role == "user" ? "User" : "Assistant";
    out += name + ": " + content + "\n";
  }
  return out + "Assistant:";
}

void serve_http(const Model& model, const Tokenizer& tok, const ServeOptions& options) {
  Server server(model, tok, options);
  running = &server;
  std::signal(SIGINT, stop_on_signal);
  std::signal(SIGTERM, stop_on_signal);
  server.run();
  running = nullptr;
}

}  // namespace memoe
