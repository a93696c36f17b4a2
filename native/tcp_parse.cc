// stub: filled in by its module owner
#include "modules.h"
namespace takeover {
void InitParse(Napi::Env, Napi::Object) {}
}  // namespace takeover
