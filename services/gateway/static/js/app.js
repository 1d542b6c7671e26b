// Entry point: wires the tabs and each tab's module.

import { config } from "./api.js";
import { byId } from "./dom.js";
import { showInsights } from "./insights.js";
import { showModels } from "./models.js";
import { initPredict } from "./predict.js";
import { initRetrain, showRetrain } from "./retrain.js";
import { initTabs } from "./tabs.js";
import { forgetToken, onTokenChange, storedToken } from "./token.js";

function showTokenState(hasToken) {
  byId("token-state").textContent = hasToken ? "A write token is stored for this browser tab." : "";
  byId("token-forget").hidden = !hasToken;
}

initPredict();
initRetrain();
config(); // fetched early: the write actions need it
onTokenChange(showTokenState);
showTokenState(Boolean(storedToken()));
byId("token-forget").addEventListener("click", forgetToken);
initTabs(byId("tablist"), { retrain: showRetrain, insights: showInsights, models: showModels });
document.body.dataset.ready = "true"; // tests wait for this
