"""Handles (type HANDLE): QQ numbers, WeChat ids, social-media handles, nicknames, user names.

A handle reaches a person as surely as a phone number, but it is only recognisable by the word
before it, so every rule here needs one:

    QQ 12345678 / QQ号：12345678 / 扣扣 / 企鹅号            QQ: 5-12 digits, not starting with 0
    微信：zhang_wei88 / vx: / wx / V信 / 加v / WeChat ID     WeChat: 6-20 of letters, digits, _ and -,
                                                             starting with a letter (its own rule)
    IG: @emily.j / Instagram / Twitter / TikTok / Telegram   a social handle, with or without @
    小红书号 / 抖音号 / 微博 / 旺旺 / 淘宝账号                 Chinese platforms' ids
    昵称：小红花 / nickname: Bunny / 用户名 / username          a nickname or user name, up to the
                                                             end of the phrase
    @emily_j92 (a bare @handle that is not an e-mail)

A phone number given as a WeChat id (微信同手机号 13800138000) is left to the phone rule.
"""

from __future__ import annotations

import re
from typing import Iterator

from endcloud.privacy.extra import Cand, Hints

PRIO = 45  # above bare digit runs (a 10-digit QQ number is a handle, not an order), below IDs and phones

_SEP = r"[ \t]*(?:(?:号码|号|账号|帐号|id|ID|Id)[ \t]*)?(?:[:：=]|是|为|is|-)?[ \t]*"
_QQ = re.compile(r"(?<![A-Za-z])(?:QQ|qq|Qq|扣扣|企鹅号?|QQ号码?)" + _SEP + r"(?P<v>[1-9][0-9]{4,11})(?![0-9])")
_WECHAT_ID = r"[A-Za-z][A-Za-z0-9_\-]{5,19}(?![A-Za-z0-9_\-@.])"
# an ASCII cue ends a word ("wxyz123" is not wx + yz123); a Chinese one may touch the id (微信zhangwei88)
_WECHAT = re.compile(
    r"(?:(?<![A-Za-z])(?:vx|VX|Vx|wx|WX|Wx|wechat|WeChat|Wechat|WECHAT|weixin|Weixin)(?![A-Za-z])"
    r"|v信|V信|微信|威信|薇信|加v|加V|\+v|\+V|➕v|➕V)"
    + _SEP + r"(?P<v>" + _WECHAT_ID + ")"
)
# a Latin handle (a Discord name may end in #1234), or an @ and a Chinese one
_HANDLE = r"@?[A-Za-z0-9_][A-Za-z0-9_.\-]{2,29}(?<![.\-])(?:#[0-9]{4})?|@[\u4e00-\u9fffA-Za-z0-9_]{2,20}"
# a nickname or account name is whatever follows its label up to the end of the phrase
_FREE = r"[^\s，,。.!！?？;；、\"'”’」)）\x00]{1,24}"
# Western platforms need a colon, "ID" or an @ after the name ("line item", "my twitter is down"
# are not handles); "is" only before something handle-shaped (a digit, _, . or @ in it)
_SOCIAL = re.compile(
    r"(?<![A-Za-z])(?:IG|ig|Ig|ins|INS|Ins|insta|Insta|instagram|Instagram|twitter|Twitter|tiktok|TikTok|Tiktok|"
    r"telegram|Telegram|TG|tg|snapchat|Snapchat|facebook|Facebook|FB|fb|LINE|Line|line|whatsapp|WhatsApp|discord|Discord|"
    r"handle|Handle)(?![A-Za-z])"
    r"(?:[ \t]*(?:id|ID|Id)?[ \t]*[:：=][ \t]*|[ \t]*(?:id|ID|Id)[ \t]+|[ \t]+(?=@)|[ \t]+is[ \t]+(?=[^\s]*[0-9_.@]))"
    r"(?P<v>" + _HANDLE + r")(?![A-Za-z0-9_@])"
)
_ZH_SOCIAL = re.compile(
    r"(?:小红书号?|抖音号?|快手号?|微博|旺旺号?|阿里旺旺|淘宝账号|淘宝号|京东账号|拼多多账号|b站|B站)"
    r"(?:" + _SEP + r"(?P<v>" + _HANDLE + r")(?![A-Za-z0-9_@])"
    # a Chinese account name needs a separator that says a value follows: 淘宝号：小熊猫爱吃竹子
    r"|[ \t]*(?:[:：=]|是|为|叫)[ \t]*[\"'“‘「]?(?P<w>" + _FREE + "))"
)
_NICK = re.compile(
    r"(?:(?<![A-Za-z])(?i:nickname|nick name|username|user name|screen name|display name|user id|userid|account name)"
    r"|昵称|网名|外号|绰号|小名|用户名|会员名|账户名|账号名|登录名|用户ID|用户id|会员ID|会员id)"
    r"(?:[ \t]*(?:[:：=]|是|为|叫)[ \t]*|[ \t]+is[ \t]+(?=[^\s]*[0-9_.@\"'“‘「])|[ \t]+(?=[\"'“‘「]))[\"'“‘「]?(?P<v>" + _FREE + ")"
)
# a bare @handle: not part of an e-mail (nothing word-like before the @, no domain after)
_AT = re.compile(r"(?<![A-Za-z0-9._%+\-@*])@(?P<v>[A-Za-z_][A-Za-z0-9_.]{2,29})(?<!\.)(?![A-Za-z0-9_@]|\.[A-Za-z])")
_DOMAIN = re.compile(r"\.(?:com|cn|net|org|edu|gov|io|co|uk|de|jp|hk|tw|sg|au|fr|info|biz|me)(?:\.|$)", re.I)


class HandleDetector:
    """QQ, WeChat, social handles and nicknames (see the module docstring)."""

    name = "handles"

    def __init__(self) -> None:
        text = (re.compile(r"QQ|Qq|[+][vV]|IG|TG|FB|LINE|@"),)
        wide = (re.compile(r"扣扣|企鹅|V信|v信|微信|威信|薇信|加[vV]|➕[vV]|小红书|抖音|快手|微博|旺旺|淘宝|京东账号|拼多多账号|[bB]站|"
                           r"昵称|网名|外号|绰号|小名|用户名|会员名|账户名|账号名|登录名|用户ID|用户id|会员ID|会员id"),)
        lower = (re.compile(r"qq|vx|wx|wechat|weixin|ig|ins|twitter|handle|tiktok|telegram|tg|snap|facebook|fb|line|whatsapp|"
                            r"discord|nick|user|screen name|display name|account name|login"),)
        self._hints = Hints(text, lower, wide)

    def hints(self, lang: str | None) -> Hints:
        return self._hints

    def find(self, text: str, shadow: str, lang: str | None) -> Iterator[Cand]:
        s = shadow
        for rx, label in ((_QQ, "qq"), (_WECHAT, "wechat"), (_SOCIAL, "social"), (_ZH_SOCIAL, "social"), (_NICK, "nickname"),
                          (_AT, "at")):
            for m in rx.finditer(s):
                g = "v" if m.group("v") is not None else "w"
                start, end = m.span(g)
                if label == "at":
                    if _DOMAIN.search(m.group("v")):
                        continue  # "…@qq.com" behind a masked local part is an e-mail, not a handle
                    start -= 1  # the @ is part of the handle
                yield (PRIO, start, end, "HANDLE", label)
