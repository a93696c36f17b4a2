// stub: filled in by its module owner
#include "modules.h"
namespace takeover {
void InitPidfd(Napi::Env, Napi::Object) {}
}  // namespace takeover
