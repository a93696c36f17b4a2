// stub: filled in by its module owner
#include "modules.h"
namespace takeover {
void InitSocketOps(Napi::Env, Napi::Object) {}
}  // namespace takeover
