// stub: filled in by its module owner
#include "modules.h"
namespace takeover {
void InitSockDiag(Napi::Env, Napi::Object) {}
}  // namespace takeover
