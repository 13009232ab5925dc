"""Word lists behind the name, address and handle rules (`endcloud.privacy.names`, `places`, `handles`).

Written from general knowledge of Chinese and English names, not from any test case: the
point of each list is stated above it. Lists are plain strings and frozensets so the rule
modules can build character classes and do O(1) look-ups.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Chinese given names. A cue-less rule (李娜说, 王建国先生) accepts a name only when every
# character after the surname is one people actually give as a name: that is what keeps 周末说,
# 马上说, 余额, 付款 and most products (王老吉, 黄金叶, 碧螺春) out. Deliberately absent: numerals
# (周一, 周五), 上/下/末/日/月份 words, 老 (王老吉, 老师), 金 (黄金), 色 (颜色), 子 alone is kept
# (子涵) but see ZH_NOT_NAMES for 李子/林子/叶子.
ZH_GIVEN_CHARS = frozenset(
    # men's names, the commonest first
    "伟刚勇毅俊峰强军平保东文辉力明永健世广志义兴良海山仁波宁贵福生龙元全国胜学祥才发武新利清飞彬富顺信"
    "杰涛昌成康星光达安岩中茂进林有坚和彪博诚先敬震振壮会思群豪心邦承乐绍功松善厚庆磊民友裕河哲江超浩亮"
    "政谦亨奇固之轮翰朗伯宏言若鸣朋斌梁栋维启克伦翔旭鹏泽晨辰士以建家致树炎德行时泰盛雄琛钧冠策腾楠榕风"
    "航弘晖鑫锋锐铭钢铁军坤昊宸睿轩宇然涵梓皓铮骏驰骁霆霖森柏杉川峻嵩岳磊垚淼焱鑫犇晟昱旻晗烨煜炜熠"
    "耀灿彦皓昕晔凯楷恺恒恩瑞祥禄寿喜财宝荣华贤仕卿儒书墨砚琪瑜璟瑾璋琨珏玮"
    # women's names
    "秀英华慧巧美娜静淑惠珠翠雅芝玉萍红娥玲芬芳燕彩春菊兰凤洁梅琳素云莲真环雪荣爱妹霞香月莺媛艳瑞凡佳"
    "嘉琼勤珍贞莉桂娣叶璧璐娅琦晶妍茜秋珊莎锦黛青倩婷姣婉娴瑾颖露瑶怡婵雁蓓纨仪荷丹蓉眉君琴蕊薇菁梦岚苑"
    "婕馨瑗琰韵融园艺咏卿聪澜纯毓悦昭冰爽琬茗羽希宁欣飘育滢馥筠柔竹霭凝晓欢霄枫芸菲寒伊亚宜可姬舒影荔枝"
    "丽阳蕾诗萱彤雯霏曦晴暖娇嫣妮姗媚蔓菡萌蕙璇潇汐沁灵琬钰玥瑛婧岑洛依敏娟鹃洋曼茹莹艺方"
    # more of the commonest, both sexes: nature, virtues, jewels, light (the second round of the list)
    "雨帆语歆妤姝妙芊芷苒荟蔚霓凰鹤翱舟澈源泉溪润沐瀚洪湘渝滨淇汉沛泓泊津焕烁燃照暄桦榆杨柳桐梧"
    "巧智豪跃远通利喜庆吉欢美琅璋珺"
    # both, and the generation of 小明/小红: 小 and 晓 lead many two-character given names
    "小晓子一"
)
# Characters that are given names but far more often the word after a name (王芳和李娜, 王芳会来,
# 王芳先走, 王芳发货): never taken as part of a name found without a cue word.
ZH_GIVEN_NOT = frozenset("和好发会可以有先之时中与跟及在")
# 一 and 子 are given characters (王一博, 李子涵) but also make words with a surname (周一, 李子):
# they are accepted only as the first of two given characters, never as the only one.
ZH_GIVEN_NOT_ALONE = frozenset("一子小")

# Two- and three-character strings that start with a surname and continue with given-name
# characters, yet are words, places or brands. A candidate equal to one of these (or starting
# with one, for the three-character ones) is not a name.
ZH_NOT_NAMES = frozenset("""
周天 周日 周末 高兴 齐全 卫生 凌晨 安全 杨梅 李子 林子 叶子 黄山 华山 江山 金华 宁波 白云 龙华 龙岗 江宁 江北 温江 金山 房山 宝山
常熟 黄冈 邢台 方圆 方正 方向 方才 高明 高新 高中 高达 高清 高端 高跟 高光 高亮 明天 明星 江海 海林 夏天 夏季 秋天 春天 冬天 毛毛
程序 马克 马达 马力 马丁 孔明 孙子 谢谢 祝福 祝贺 任意 任何 任性 许可 许多 温柔 温和 温馨 温暖 万一 万家 万达 龙凤 龙虾
康师傅 王老吉 李宁 周大福 周生生 张小泉 马应龙 王致和 杨国福 陈克明 李锦记 王守义 周黑鸭 戴森 范思哲 乔丹 江小白 杜康 金龙鱼
鲁花 胡姬花 施华洛世奇 徐福记 卫龙 沈大成 黄鹤楼 黄金叶 白沙 苏烟 钟薛高 张裕 汤臣倍健 马利 晨光 雷军 罗技 韩束 林清轩 毛戈平
孔府家酒 宋河 郎酒 董酒 习酒 唐宫 宋城 秦岭 蒋村 梁山 薛记 孙悟空 关羽 诸葛亮 曹操 刘备 孔子 孟子 老子 庄子 鲁迅 李白 杜甫 白居易
韩版 韩式 欧式 欧美 法式 方便 方法 方式 方面 余额 付款 颜色 申请 童装 米色 房间 尤其 毕竟 陆续 严重 舒服 齐备 华为 荣耀 苏宁
苏泊尔 九阳 美的 格力 海尔 方太 老板 万和 史密斯 林内 华帝 樱花 戴尔 惠普 联想 宏碁 雷蛇 罗马 罗兰 蓝月亮 立白 奥妙 白猫 雕牌
""".split())

# Honorifics and roles that follow a surname (王先生, 李老师, 张总) and make it a person.
ZH_TITLES = ("先生", "女士", "小姐", "老师", "太太", "夫人", "师傅", "经理", "同学", "阿姨", "叔叔", "大爷", "大妈",
             "医生", "律师", "教授", "老板", "总监", "主任", "姐姐", "哥哥", "总")
# 张总 is a boss, but 总 also starts 总共, 总额, 总价 …: after these it is not a title.
ZH_ZONG_NOT = "共额计价数结部体之算量是和量的"

# Verbs of speech and action that follow a person (李娜说, 张伟让我, 王芳签收).
ZH_SPEECH = ("说", "讲", "问", "告诉", "表示", "提到", "反映", "回复", "答应", "要求", "让我", "叫我", "要我", "跟我说",
             "和我说", "对我说", "打电话", "来电", "签收", "代收", "取件", "取走", "本人", "的快递", "的包裹", "的订单",
             "的电话", "的手机", "的地址", "的名字", "帮我", "替我", "您好", "你好")
# …except where the verb character is the start of a word: 说明, 问题, 讲究, 本人 is fine.
ZH_SPEECH_NOT_AFTER = {"说": "明服法", "问": "题候号", "讲": "究解座"}

# Words before a person (转告张伟, 寄给李娜, 联系王芳): the name follows directly.
ZH_BEFORE = ("转告", "告诉", "通知", "联系", "寄给", "送给", "交给", "发给", "转给", "留给", "找一下", "麻烦", "嘱咐",
             "代", "替", "让", "叫",
             # addressing the person: 好的张伟，… / 亲爱的李娜 / 谢谢王芳
             "好的", "亲爱的", "尊敬的", "谢谢", "感谢")

# Field labels that introduce a name, either script (`receiver: 张伟` is the server's own profile format).
ZH_NAME_FIELDS = ("姓名", "名字", "收件人", "收货人", "联系人", "签收人", "寄件人", "户名", "持卡人", "开户人", "取件人",
                  "提货人", "订购人", "下单人", "购买人", "客户姓名", "客户名", "顾客姓名", "买家姓名", "称呼", "代收人",
                  "委托人", "收款人", "付款人", "联络人", "紧急联系人")
EN_NAME_FIELDS = ("full name", "first name", "last name", "given name", "surname", "customer name", "buyer name",
                  "receiver", "recipient", "consignee", "addressee", "contact person", "contact name", "contact",
                  "cardholder", "card holder", "account holder", "account name", "billing name", "bill to",
                  "ship to", "deliver to", "send to", "attn", "attention", "signed by", "signed for by",
                  "picked up by", "collected by", "sender", "name", "c/o")

# ---------------------------------------------------------------------------------------------
# English names. A first name from this list followed by a capitalised word is a person only in
# context (says, my wife, Dear, receiver:) or when the second word is a listed surname. Left
# out on purpose: first names that are common words or months in title case (Will, May,
# June, April, Summer, Hope, Faith, Joy, Grace is kept: it rarely starts a product name).
EN_FIRST_NAMES = frozenset("""
James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel Matthew Anthony Donald
Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward Jason Jeffrey Ryan Jacob Gary Nicholas
Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Patrick Raymond Jack Dennis
Jerry Tyler Aaron Jose Adam Nathan Henry Douglas Zachary Peter Kyle Ethan Walter Noah Jeremy Christian Keith Roger
Terry Gerald Harold Sean Austin Carl Arthur Lawrence Dylan Jesse Jordan Bryan Billy Joe Bruce Gabriel Logan Albert
Willie Alan Juan Wayne Elijah Randy Roy Vincent Ralph Eugene Russell Bobby Mason Philip Louis Liam Oliver Lucas
Leo Owen Luke Isaac Caleb Connor Hunter Evan Ian Tom Tim Jim Mike Dave Steve Bob Ben Sam Dan Nick Alex Chris Matt
Tony Andy Rob Greg Jeff Josh Ted Fred Harry Charlie Jamie Oscar Edwin Felix Hugo Simon Martin Graham Colin Neil
Stuart Gavin Rhys Callum Declan Kieran Aidan Finn Rory Ewan Angus Hamish Nigel Trevor Clive Derek Barry Gordon
Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Margaret Sandra Ashley
Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa Deborah Stephanie Rebecca Sharon Laura Cynthia Kathleen
Amy Angela Shirley Anna Brenda Pamela Emma Nicole Helen Samantha Katherine Christine Debra Rachel Carolyn Janet
Catherine Maria Heather Diane Julie Joyce Victoria Kelly Christina Lauren Joan Evelyn Olivia Judith Megan Cheryl
Martha Andrea Frances Hannah Jacqueline Ann Gloria Jean Kathryn Alice Teresa Sara Janice Doris Madison Julia Grace
Judy Abigail Marie Denise Beverly Amber Theresa Marilyn Danielle Diana Brittany Natalie Sophia Alexis Lori Kayla
Jane Sophie Chloe Charlotte Amelia Isabella Mia Ava Ella Lily Zoe Lucy Ellie Freya Isla Poppy Evie Imogen Holly
Phoebe Harriet Eleanor Jasmine Bethany Lydia Ruth Claire Fiona Gemma Kirsty Nicola Zara Leah Naomi Esther Molly
Kate Katie Jenny Becky Liz Beth Sue Meg Jess Ellen Karen Tina Wendy Vicky Abby Tracy Stacy Kristen Lindsay Erin
Mark Frank Adrian Dominic Jake Joel Shane Troy Victor Wesley Marcus Leon Max Ray Rosa Rose Jade Ivy Nina Eva Stella Bella
Paige Courtney Chelsea Whitney Brooke Melanie Monica Vanessa Veronica Yvonne Carmen Claudia Gina Irene Joanna Kim Leslie
Mandy Maggie Paula Rita Sally Sylvia Ruby Hazel Ivan Harvey Elliot Toby Archie Alfie Freddie Theo Reggie Louise Lorna Sheila
Wei Ming Hui Jun Li Xin Yan Jing Lei Fang Hong Ying Chen Min Lin Yu Hao Jie Tao Qiang Na Ling Yang Ping Bo Kai
Raj Priya Amit Ananya Rahul Arjun Deepak Sanjay Vijay Anil Sunil Ravi Neha Pooja Divya Aisha Fatima Omar Ahmed
Mohammed Muhammad Ali Hassan Yusuf Ibrahim Carlos Luis Miguel Jorge Pedro Diego Javier Sofia Lucia Isabel Elena
Camila Valentina Hiroshi Takeshi Yuki Kenji Haruka Sakura Minjun Jiwoo Seojun Hana Pierre Jean-Luc Francois Marie
Hans Klaus Stefan Lukas Anja Katrin Giulia Marco Luca Francesca Ivan Dmitri Olga Natasha Sven Lars Ingrid Astrid
""".split())

# Surnames: a listed first name followed by one of these is a person anywhere in a sentence.
EN_SURNAMES = frozenset("""
Smith Johnson Williams Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson Anderson Thomas
Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen
King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts
Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers
Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez
Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez
Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero
Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson
Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington
Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez
Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox
Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn
Kelley Spencer Hawkins Arnold Pierce Vazquez Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan
Armstrong Hudson Carroll Lane Riley Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena
Richards Contreras Willis Carpenter Lawrence Sandoval Brown Davies Evans Thomas Roberts Wright Walsh Byrne O'Brien
O'Connor O'Neil O'Neill McCarthy McLaughlin Kennedy Lynch Murphy Doyle Quinn Fitzgerald MacDonald Campbell Stewart
Reid Fraser Ross Hamilton Wang Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo Lin Luo Zheng Liang Song
Tang Han Feng Deng Cao Peng Zeng Xiao Tian Dong Pan Yuan Cai Jiang Yu Du Ye Cheng Wei Su Lu Ding Shen Yao Lu Tan
Wong Chan Leung Cheung Lau Ng Ho Yip Tsang Chow Kwok Lam Tse Yeung Singh Kumar Sharma Gupta Shah Mehta Khan Ahmed
Ali Hussain Tanaka Suzuki Sato Watanabe Takahashi Yamamoto Nakamura Kobayashi Park Choi Jung Kang Cho Yoon Jang
Mueller Schneider Fischer Weber Becker Schulz Rossi Russo Ferrari Esposito Bianchi Romano Dubois Martin Bernard
Petit Durand Leroy Moreau Laurent Lefebvre Ivanov Petrov Novak Kowalski Nowak Jensen Nielsen Larsen Andersen
Johansson Karlsson Nilsson Eriksson Larsson Olsen Berg Hansen
""".split())

# Capitalised words that follow a first name in product names and marketing copy, never surnames
# here: "Jordan Retro", "Grace Premium", "Ruby Red". A first + one of these is not a person.
EN_NOT_SURNAMES = frozenset("""
Retro High Low Mid Pro Max Plus Mini Air Classic Original Edition Series Watch Phone Pad Book Ultra Lite Light
Gold Silver Red Blue Green Black White Grey Gray Pink Purple Orange Yellow Brown Navy Beige Cream Ivory
Collection Limited Special Deluxe Premium Signature Sport Sports Running Trainer Sneaker Boot Boots Bag Tote Set Kit
Gift Box Pack Bundle Size Small Medium Large Extra Cotton Silk Wool Leather Denim Linen Home Kitchen Baby Kids
Junior Senior Street Road Avenue Lane Drive Park Square Hall House Court Place Way Express Shop Store Outlet
Perfume Cologne Bloom Eau Parfum Cream Serum Lotion Oil Spray Essence Mask Lipstick Blush Foundation Palette
The And Or Of For With From To In On At By Please Thanks Thank Order Customer Service Support Team Department
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August
September October November December Christmas Easter Day Night Morning Evening Week Month Year
""".split())

# Brands and product lines that are (or look like) a person's name. Matched on the first word
# plus what follows, so "Calvin Klein jeans" and "Tommy Hilfiger" survive.
EN_BRAND_NAMES = frozenset(" ".join(s.split()).lower() for s in """
Calvin Klein|Ralph Lauren|Tommy Hilfiger|Michael Kors|Marc Jacobs|Kate Spade|Tory Burch|Vera Wang|Hugo Boss|Ted Baker
|Jimmy Choo|Christian Dior|Christian Louboutin|Giorgio Armani|Estee Lauder|Jo Malone|Steve Madden|Sam Edelman|Paul Smith
|Stella McCartney|Alexander McQueen|Alexander Wang|Tom Ford|Kenneth Cole|Anne Klein|Betsey Johnson|Bobbi Brown
|Laura Mercier|Charlotte Tilbury|Rebecca Minkoff|Victoria Beckham|John Lewis|Lilly Pulitzer|Kevin Murphy|Paula Choice
|Ben Sherman|Fred Perry|Johnnie Walker|Jack Daniels|Jim Beam|Jose Cuervo|Martha Stewart|Betty Crocker|Sara Lee
|Dr Martens|Dr. Martens|Mr Clean|Mr. Clean|Mr Muscle|Mr. Muscle|Marie Claire|Ray Ban|Oscar Mayer|Billy Reid
|Ann Taylor|Isabel Marant|Stella Artois|Ben Jerry|Jack Wolfskin|Tommy Bahama|Nick Jr|Jordan Brand|Paul Frank|Vera Bradley
|Lucky Brand|Kate Somerville|Alice Olivia|Joe Fresh|Harry Potter|Peter Rabbit|Hello Kitty|Mary Kay|Sally Hansen
|Paul Mitchell|John Frieda|Louis Vuitton|Donna Karan|Jessica Simpson|Rachael Ray|George Foreman|Levi Strauss|John Deere
|Stuart Weitzman|Laura Ashley|Anna Sui|Joseph Joseph|Russell Hobbs|Morphy Richards|Henry Hoover|Harvey Nichols
|Charles Tyrwhitt|Thomas Sabo|Thomas Pink|Karl Lagerfeld|Jean Paul|Daniel Wellington|Michael Hill|James Avery
|David Yurman|Olivia Burton|Jack Wills|Ted Lapidus|Aunt Jemima|Uncle Ben|Tom Tailor|Jack Jones|Peter Thomas
""".split("|"))

# Words after "Dear", "Hi" or a title that are not names.
EN_NOT_NAMES = frozenset("""
Sir Madam Madame Customer Customers Client Clients Team Friend Friends Buyer Buyers Seller Shopper Shoppers Guest All
Everyone There Support Service Manager Valued Member Members Colleague Colleagues Partner Partners Reader Reviewer
Staff Admin Owner Shop Store Seller Mr Mrs Ms Miss Dr
""".split())

# Relations (zh) that name the person after them: 我老婆赵敏, 我朋友林志强.
ZH_RELATIONS = ("老婆", "老公", "爱人", "媳妇", "丈夫", "妻子", "妈妈", "我妈", "爸爸", "我爸", "儿子", "女儿", "朋友", "同事",
                "同学", "室友", "舍友", "邻居", "哥哥", "姐姐", "弟弟", "妹妹", "表哥", "表姐", "表妹", "表弟", "闺蜜", "男朋友",
                "女朋友", "对象", "家人", "领导", "老板", "助理", "婆婆", "岳母", "奶奶", "爷爷", "外婆", "外公", "叔叔", "阿姨")
# Possessions after "Emily's": the person owns what follows.
EN_POSSESSIONS = ("address", "order", "parcel", "package", "phone", "number", "email", "account", "birthday", "gift",
                  "card", "name", "details", "delivery", "refund", "return", "house", "flat", "apartment", "office", "mum",
                  "mom", "dad", "wife", "husband", "son", "daughter", "size")
# Relations that name the person after them: "my wife Sarah", "her son, Tom Lee".
EN_RELATIONS = ("wife", "husband", "son", "daughter", "mom", "mum", "mother", "dad", "father", "friend", "sister",
                "brother", "colleague", "coworker", "neighbour", "neighbor", "boss", "partner", "roommate", "flatmate",
                "boyfriend", "girlfriend", "fiance", "fiancee", "grandma", "grandpa", "aunt", "uncle", "cousin",
                "niece", "nephew", "assistant", "housekeeper", "nanny", "landlord", "landlady", "tenant")
EN_SPEECH = ("says", "said", "told", "tells", "asked", "asks", "wrote", "writes", "mentioned", "called", "calls",
             "texted", "emailed", "messaged", "signed", "will sign", "will pick", "picked", "will collect", "collected",
             "is picking", "can sign", "can pick", "ordered", "paid", "lives", "replied", "wants", "needs", "received")
EN_GREETINGS = ("dear", "hi", "hello", "hey", "thanks", "thank you", "thx", "cheers", "regards", "sincerely", "best",
                "yours", "love", "bye", "goodbye", "morning", "evening", "afternoon", "ask", "tell", "for")

# ---------------------------------------------------------------------------------------------
# Postcodes. UK postcode areas (the one or two letters a postcode starts with), so "PS5 2TB"
# and "RTX 4090" are not postcodes. The inward code never uses C I K M O V.
UK_POSTCODE_AREAS = frozenset("""
AB AL B BA BB BD BH BL BN BR BS BT CA CB CF CH CM CO CR CT CV CW DA DD DE DG DH DL DN DT DY E EC EH EN EX FK FY G GL
GU GY HA HD HG HP HR HS HU HX IG IM IP IV JE KA KT KW KY L LA LD LE LL LN LS LU M ME MK ML N NE NG NN NP NR NW OL OX
PA PE PH PL PO PR RG RH RM S SA SE SG SK SL SM SN SO SP SR SS ST SW SY TA TD TF TN TQ TR TS TW UB W WA WC WD WF WN WR
WS WV YO ZE
""".split())
US_STATES = frozenset("""
AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA RI
SC SD TN TX UT VT VA WA WV WI WY DC PR
""".split())
CA_PROVINCES = frozenset("AB BC MB NB NL NS NT NU ON PE QC SK YT".split())
