// stub: filled in by its module owner
#include "modules.h"
namespace takeover {
void InitNeighAnnounce(Napi::Env, Napi::Object) {}
}  // namespace takeover
